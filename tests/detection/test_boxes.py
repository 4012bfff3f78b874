"""Box conversions and the two IoU formulas (hand-computed fixtures, pycocotools as oracle)."""

import numpy as np
import pytest

from detsearch.detection.boxes import area_yxyx, check_yxyx, iou_xywh, iou_yxyx, xywh_to_yxyx, yxyx_to_xywh


def test_yxyx_to_xywh_hand_computed():
    boxes = np.array([[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 0.5, 0.25]], np.float32)
    np.testing.assert_array_equal(yxyx_to_xywh(boxes), [[20.0, 10.0, 40.0, 30.0], [0.0, 0.0, 0.25, 0.5]])
    assert yxyx_to_xywh(boxes).dtype == np.float64


def test_xywh_to_yxyx_hand_computed():
    np.testing.assert_array_equal(xywh_to_yxyx([[20.0, 10.0, 40.0, 30.0]]), [[10.0, 20.0, 40.0, 60.0]])
    assert xywh_to_yxyx([[1, 2, 3, 4]]).dtype == np.float32


def test_round_trip_is_exact_for_float32_boxes():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 1000, (500, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0, 300, (500, 2))], axis=1).astype(np.float32)
    xywh = yxyx_to_xywh(boxes)
    # x + w gives back xmax exactly: pycocotools recomputes x2 = x + w from our json.
    np.testing.assert_array_equal((xywh[:, 0] + xywh[:, 2]).astype(np.float32), boxes[:, 3])
    np.testing.assert_array_equal(xywh_to_yxyx(xywh), boxes)


def test_empty_inputs():
    assert yxyx_to_xywh(np.zeros((0, 4))).shape == (0, 4)
    assert iou_yxyx(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert iou_xywh([], [[0, 0, 1, 1]]).shape == (0, 1)


def test_area_yxyx():
    np.testing.assert_array_equal(area_yxyx([[0, 0, 2, 3], [1, 1, 1, 5]]), [6.0, 0.0])


def test_iou_yxyx_hand_computed():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 20], [20, 20, 30, 30], [5, 5, 15, 15], [0, 0, 10, 10], [3, 3, 3, 9]], np.float32)
    np.testing.assert_array_equal(iou_yxyx(a, b)[0], np.float32([0.5, 0.0, 25 / 175, 1.0, 0.0]))
    # Coordinates are ordered first, as the TF kernel does.
    np.testing.assert_array_equal(iou_yxyx([[10, 10, 0, 0]], [[0, 0, 10, 20]]), [[0.5]])
    assert iou_yxyx(a, b).dtype == np.float32


def test_iou_xywh_matches_pycocotools_bitwise():
    mask_utils = pytest.importorskip("pycocotools.mask", reason="the oracle: pip install 'detsearch[coco]'")
    rng = np.random.default_rng(1)
    dt = np.concatenate([rng.uniform(0, 200, (60, 2)), rng.uniform(0.5, 80, (60, 2))], axis=1)
    gt = np.concatenate([rng.uniform(0, 200, (25, 2)), rng.uniform(0.5, 80, (25, 2))], axis=1)
    gt[:5] = dt[:5]  # identical boxes
    crowd = rng.random(25) < 0.3
    expected = mask_utils.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist())
    np.testing.assert_array_equal(iou_xywh(dt, gt, crowd), expected)
    assert (iou_xywh(dt, gt) == mask_utils.iou(dt.tolist(), gt.tolist(), [0] * 25)).all()


def test_crowd_iou_is_intersection_over_detection_area():
    # detection inside a crowd region: IoU 1 against the crowd, 0.25 against a normal box
    assert iou_xywh([[0, 0, 10, 10]], [[0, 0, 20, 20]], [True])[0, 0] == 1.0
    assert iou_xywh([[0, 0, 10, 10]], [[0, 0, 20, 20]], [False])[0, 0] == 0.25


@pytest.mark.parametrize(
    "boxes, message",
    [
        ([[0, 0, 1, np.nan]], "row 0 is not finite"),
        ([[0, 0, 1, 1], [0, 5, 1, 4]], "row 1 has negative height or width"),
        ([[0, 0, 1, np.inf]], "not finite"),
    ],
)
def test_check_yxyx_names_the_bad_row(boxes, message):
    with pytest.raises(ValueError, match=message):
        check_yxyx(np.asarray(boxes, np.float32), "candidate boxes")


def test_bad_shape():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        yxyx_to_xywh(np.zeros((3, 5)))
