"""Tests for detsearch.datasets.voc: the real deepforest VOC sample, the box convention, difficult
objects as COCO ignore regions, and every validation error.

The real sample comes from the installed ``deepforest==2.1.0`` (the ``deepforest_dir`` fixture of
tests/conftest.py); the synthetic sets need no image decoder: ``load_voc`` checks that an image
file exists, and only the ``tf`` test decodes one."""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from detsearch.datasets.detection import DatasetError
from detsearch.datasets.voc import DEEPFOREST_FILES, fetch_deepforest_sample, load_voc

# Counted independently of detsearch.datasets.voc: one <object> element per box in each xml file.
DEEPFOREST_BOXES = {
    "2019_YELL_2_528000_4978000_image_crop2.xml": 574,
    "2019_YELL_2_541000_4977000_image_crop.xml": 279,
    "OSBS_029.xml": 61,
    "SOAP_061.xml": 37,
}


# ---------------------------------------------------------------------------
# Real data.
# ---------------------------------------------------------------------------


def test_deepforest_files(deepforest_dir: Path) -> None:
    assert sorted(p.name for p in deepforest_dir.iterdir() if p.is_file()) == sorted(
        DEEPFOREST_FILES)
    for name, expected in DEEPFOREST_BOXES.items():
        text = (deepforest_dir / name).read_text()
        assert len(re.findall(r"<object>", text)) == expected
        assert len(re.findall(r"<bndbox>", text)) == expected
    assert sum(DEEPFOREST_BOXES.values()) == 951
    assert fetch_deepforest_sample() == deepforest_dir  # Present: reused, nothing fetched.


def test_deepforest_loads(deepforest_dir: Path) -> None:
    dataset = load_voc(deepforest_dir)
    assert len(dataset) == 4 and dataset.num_boxes == 951
    # Image ids follow the sorted xml names.
    assert [(e.image_id, e.file_name, e.num_boxes) for e in dataset.examples] == [
        (1, "2019_YELL_2_528000_4978000_image_crop2.png", 574),
        (2, "2019_YELL_2_541000_4977000_image_crop.png", 279),
        (3, "OSBS_029.tif", 61),
        (4, "SOAP_061.png", 37),
    ]
    assert dataset.categories == ({"id": 1, "name": "Alive"}, {"id": 2, "name": "Dead"},
                                  {"id": 3, "name": "Tree"})
    classes = Counter(int(c) for e in dataset.examples for c in e.classes)
    assert classes == {3: 914, 2: 28, 1: 9}
    assert sum(int(e.is_crowd.sum()) for e in dataset.examples) == 0  # No difficult objects.
    first = dataset.examples[0]
    assert (first.height, first.width) == (2472, 2299)
    # First object: xmin 681, ymin 369, xmax 699, ymax 386 -> (368, 680, 386, 699).
    np.testing.assert_array_equal(first.boxes[0], [368, 680, 386, 699])
    assert first.areas[0] == 18 * 19
    # Every box, against the xml text read with a regex: COCO bbox is
    # [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1].
    coco = dataset.to_coco_json()["annotations"]
    expected = []
    for name in sorted(DEEPFOREST_BOXES):
        text = (deepforest_dir / name).read_text()
        for values in re.findall(r"<xmin>(\d+)</xmin>\s*<ymin>(\d+)</ymin>\s*"
                                 r"<xmax>(\d+)</xmax>\s*<ymax>(\d+)</ymax>", text):
            xmin, ymin, xmax, ymax = map(int, values)
            expected.append([xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1])
    assert [a["bbox"] for a in coco] == expected
    for example in dataset.examples:
        # 1-based inclusive pixels: the sample's extremes 1 and W/H map to 0 and W/H exactly.
        assert example.boxes[:, :2].min() == 0
        assert example.boxes[:, 2].max() <= example.height
        assert example.boxes[:, 3].max() <= example.width


def test_deepforest_class_names_and_coco_self_evaluation(deepforest_dir: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset = load_voc(deepforest_dir, class_names=["Tree", "Dead", "Alive"])
    assert dataset.category_names == {1: "Tree", 2: "Dead", 3: "Alive"}
    coco = dataset.to_coco_json()
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"],
                   "bbox": a["bbox"], "score": 1.0} for a in coco["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluation.params.imgIds = [3, 4]  # The two 400x400 images: under 100 boxes each.
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


@pytest.mark.tf
def test_deepforest_through_model_garden_records(deepforest_dir: Path, tmp_path: Path) -> None:
    """The sample as users train on it: `write_records`, read back by Model Garden's own decoder.
    All four images come through, OSBS_029.tif (which TensorFlow does not decode) as a PNG of
    OpenCV's pixels; every box, difficult ones flagged as crowd."""
    import cv2

    from detsearch.models.pipeline import write_records
    from tests.datasets.records_cases import assert_records_hold, decoded_records

    dataset = load_voc(deepforest_dir)
    decoded = decoded_records(write_records(dataset, tmp_path / "records"))
    assert [(e.height, e.width) for e in dataset.examples] == [
        (2472, 2299), (1035, 1249), (400, 400), (400, 400)]
    assert_records_hold(dataset, decoded)
    [tiff] = [e for e in dataset.examples if e.file_name == "OSBS_029.tif"]
    pixels = cv2.imread(str(deepforest_dir / tiff.file_name), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(decoded[tiff.image_id]["image"].numpy(), pixels)


# ---------------------------------------------------------------------------
# Synthetic files.
# ---------------------------------------------------------------------------


def voc_xml(filename="img.png", size=(60, 80), objects=(("dog", (11, 21, 40, 50), None),),
            drop=()) -> str:
    """VOC xml text; size is (height, width); objects are (name, (xmin, ymin, xmax, ymax),
    difficult). ``drop`` removes elements by tag (e.g. 'size', 'bndbox', 'name')."""
    parts = ["<annotation>"]
    if "filename" not in drop:
        parts.append(f"<filename>{filename}</filename>")
    if "size" not in drop:
        parts.append(f"<size><width>{size[1]}</width><height>{size[0]}</height>"
                     "<depth>3</depth></size>")
    for name, coords, difficult in objects:
        parts.append("<object>")
        if "name" not in drop:
            parts.append(f"<name>{name}</name>")
        if difficult is not None:
            parts.append(f"<difficult>{difficult}</difficult>")
        if "bndbox" not in drop:
            keys = ("xmin", "ymin", "xmax", "ymax")
            parts.append("<bndbox>" + "".join(f"<{k}>{v}</{k}>" for k, v in zip(keys, coords))
                         + "</bndbox>")
        parts.append("</object>")
    parts.append("</annotation>")
    return "\n".join(parts)


def write_set(root: Path, files: dict[str, str], images: tuple[str, ...] = ("img.png",)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    for name in images:
        (root / name).write_bytes(b"an image file: load_voc checks that it exists")
    return root


def test_difficult_is_crowd_and_ignored_by_coco_evaluation(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root = write_set(tmp_path, {"a.xml": voc_xml(objects=(
        ("dog", (1, 1, 20, 20), 0), ("dog", (41, 31, 70, 60), 1), ("cat", (5, 5, 9, 9), None)))})
    dataset = load_voc(root)
    [example] = dataset.examples
    np.testing.assert_array_equal(example.is_crowd, [False, True, False])
    np.testing.assert_array_equal(example.boxes, [[0, 0, 20, 20], [30, 40, 60, 70], [4, 4, 9, 9]])
    np.testing.assert_array_equal(example.classes, [2, 2, 1])  # Sorted names: cat 1, dog 2.
    coco = dataset.to_coco_json()
    assert [a["iscrowd"] for a in coco["annotations"]] == [0, 1, 0]
    # Detect only the non-difficult objects: the difficult one is not a missed object
    # (AR would be 2/3 for the dog class otherwise) ...
    hits = [{"image_id": 1, "category_id": 2, "bbox": [0, 0, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [4, 4, 5, 5], "score": 0.8}]
    # ... and a detection on it is not a false positive.
    on_difficult = {"image_id": 1, "category_id": 2, "bbox": [40, 30, 30, 30], "score": 0.95}
    for detections in (hits, hits + [on_difficult]):
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = coco
            gt.createIndex()
            evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0) and evaluation.stats[8] == 1.0


def test_layouts_ids_and_class_names(tmp_path: Path) -> None:
    # VOCdevkit layout: Annotations/ + JPEGImages/.
    devkit = tmp_path / "VOC2007"
    write_set(devkit / "Annotations", {"b.xml": voc_xml("b.jpg"), "a.xml": voc_xml("a.jpg")},
              images=())
    write_set(devkit / "JPEGImages", {}, images=("a.jpg", "b.jpg"))
    dataset = load_voc(devkit)
    assert dataset.image_dir == devkit / "JPEGImages"
    assert [(e.image_id, e.file_name) for e in dataset.examples] == [(1, "a.jpg"), (2, "b.jpg")]
    # A list of files, a single file, and class_names order.
    files = [devkit / "Annotations" / "b.xml", devkit / "Annotations" / "a.xml"]
    listed = load_voc(files, image_dir=devkit / "JPEGImages", class_names=("cat", "dog"))
    assert [e.file_name for e in listed.examples] == ["a.jpg", "b.jpg"]
    assert listed.category_names == {1: "cat", 2: "dog"}
    assert listed.examples[0].classes.tolist() == [2]
    single = load_voc(files[0], image_dir=devkit / "JPEGImages")
    assert [e.file_name for e in single.examples] == ["b.jpg"]
    # Fractional coordinates and an image without objects.
    root = write_set(tmp_path / "frac", {
        "a.xml": voc_xml(objects=(("dog", ("10.5", "20.25", "30", "40"), None),)),
        "b.xml": voc_xml(objects=()),
    })
    loaded = load_voc(root)
    np.testing.assert_array_equal(loaded.examples[0].boxes, [[19.25, 9.5, 40, 30]])
    assert loaded.examples[1].num_boxes == 0


@pytest.mark.parametrize(
    "xml, message",
    [
        (voc_xml(drop=("size",)), r"a.xml: missing <size>"),
        (voc_xml(drop=("filename",)), r"a.xml: missing <filename>"),
        (voc_xml(size=("sixty", 80)), r"a.xml: <size><height> is 'sixty', not a positive"),
        (voc_xml(size=(0, 80)), r"a.xml: <size><height> is '0', not a positive"),
        (voc_xml(objects=(("dog", (1, 1, 2, 2), None), ("cat", (1, 1, 2, 2), None)),
                 drop=("bndbox",)), r"a.xml: object 0 \(dog\): missing <bndbox>"),
        (voc_xml(drop=("name",)), r"a.xml: object 0: missing <name>"),
        (voc_xml(objects=(("dog", (1, 1, 2, 2), None), ("cat", (1, "", 2, 2), None))),
         r"a.xml: object 1 \(cat\): <bndbox><ymin> is None, not a number"),
        (voc_xml(objects=(("dog", (1, 1, "2px", 2), None),)),
         r"a.xml: object 0 \(dog\): <bndbox><xmax> is '2px', not a number"),
        (voc_xml(objects=(("dog", (1, 1, 82, 2), None),)),
         r"a.xml: object 0 \(dog\) \[bndbox xmin=1 ymin=1 xmax=82 ymax=2\]: box .* outside"),
        (voc_xml(objects=(("dog", (5, 1, 3, 2), None),)),
         r"a.xml: object 0 \(dog\) \[bndbox .*\]: box .* zero or negative size"),
        (voc_xml(objects=(("dog", (1, 1, 2, 2), "yes"),)),
         r"a.xml: object 0 \(dog\): <difficult> is 'yes', expected 0 or 1"),
        ("<annotation><filename>", r"a.xml: not a readable XML file"),
        ("<html/>", r"a.xml: root element <html>, expected <annotation>"),
    ],
)
def test_errors_name_the_file_and_object(tmp_path: Path, xml: str, message: str) -> None:
    root = write_set(tmp_path, {"a.xml": xml})
    with pytest.raises(DatasetError, match=re.escape(str(root)) + "/" + message):
        load_voc(root)


def test_dataset_level_errors(tmp_path: Path) -> None:
    root = write_set(tmp_path / "set", {"a.xml": voc_xml(), "b.xml": voc_xml("missing.png")})
    with pytest.raises(DatasetError, match=r"b.xml: image file .*missing.png not found"):
        load_voc(root)
    assert len(load_voc(root, check_images=False)) == 2
    with pytest.raises(DatasetError, match=r"a.xml: object 0 \(dog\): class name not in"):
        load_voc(root, class_names=["cat"], check_images=False)
    with pytest.raises(DatasetError, match="class_names has duplicates"):
        load_voc(root, class_names=["dog", "dog"], check_images=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: empty dataset \(no .xml files\)"):
        load_voc(tmp_path / "empty")
    with pytest.raises(DatasetError, match="list of VOC xml files is empty"):
        load_voc([])
    other = write_set(tmp_path / "other", {"c.xml": voc_xml()})
    with pytest.raises(DatasetError, match="lie in 2 directories"):
        load_voc([root / "a.xml", other / "c.xml"])
    with pytest.raises(DatasetError, match="no such VOC directory or xml file"):
        load_voc(tmp_path / "nothing")


def test_fetch_rejects_a_wrong_wheel(tmp_path: Path) -> None:
    import zipfile

    wheel = tmp_path / "deepforest-2.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in DEEPFOREST_FILES:
            archive.writestr(f"deepforest/data/{name}", b"not the real file")
    with pytest.raises(DatasetError, match=r"has sha256 .*, expected"):
        fetch_deepforest_sample(tmp_path / "out", wheel=wheel)
    assert list((tmp_path / "out").iterdir()) == []  # Nothing half-written.
