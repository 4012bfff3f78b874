"""mAP regression: the shipped demo checkpoint on the demo val split, through cache and sweep.
(That the sweep equals Model Garden's own post-processing is tests/models/test_ssd.py's job.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from detsearch.datasets import demo
from detsearch.detection.sweep import sweep
from detsearch.params import ParamSpec
from detsearch.models.data import load_dataset

# detsearch.models.record and .restore import TensorFlow and Model Garden: the tests import them.
pytestmark = [pytest.mark.tf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "checkpoints" / "ssd_tiny_demo"

# Measured with the shipped checkpoint on the full demo val split (500 images, seed 0).
# A real regression (model, post-processing, cache, sweep or evaluation) moves them by far more
# than TOLERANCE; CPU kernel differences move them by far less.
PINNED = {
    (0.05, 0.5): (0.31952790243426116, 0.6424660558554187, 72.646),  # Model Garden's default thresholds
    (0.3, 0.5): (0.3032017741622408, 0.6051169299116905, 6.978),
}
TOLERANCE = 0.003


@pytest.fixture(scope="module")
def val(sandbox, real_mnist_dir):
    """The demo's val split, as a user loads it: the default set in its default directory, which
    is under the session's temporary data root (tests/conftest.py), built there once."""
    assert demo.default_demo_dir().is_relative_to(sandbox)  # never ./data
    return load_dataset("demo", "val")


def test_shipped_checkpoint_map_is_pinned(val, tmp_path):
    from detsearch.models.record import record_cache
    from detsearch.models.restore import load_detector

    detector, _ = load_detector(SHIPPED)
    assert detector.thresholds["score_threshold"] == 0.05 and detector.thresholds["iou_threshold"] == 0.5
    assert len(val) == 500
    cache = record_cache(detector, val, tmp_path / "cache", score_floor=0.01)
    result = sweep(cache, val.to_coco_json(), ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.5]))
    for row in result.table:
        ap, ap50, dets = PINNED[(row.params["score_threshold"], row.params["iou_threshold"])]
        assert row.stats[0] == pytest.approx(ap, abs=TOLERANCE)
        assert row.stats[1] == pytest.approx(ap50, abs=TOLERANCE)
        assert row.dets_per_image == pytest.approx(dets, rel=0.02)


def test_shipped_checkpoint_through_detsearch_eval_expect(val, tmp_path, capsys):
    """The regression check a user's CI runs: final detections (Model Garden's post-processing
    at the default thresholds) through ``detsearch eval --expect`` against the recorded stats
    (tests/models/data/shipped_eval.json, written by the same command)."""
    import json

    from detsearch import cli
    from detsearch.models.record import predict_results
    from detsearch.models.restore import load_detector

    detector, _ = load_detector(SHIPPED)
    (tmp_path / "gt.json").write_text(json.dumps(val.to_coco_json()))
    (tmp_path / "dt.json").write_text(json.dumps(predict_results(detector, val)))
    expected = ROOT / "tests" / "models" / "data" / "shipped_eval.json"
    code = cli.main(["eval", "--detections", str(tmp_path / "dt.json"), "--annotations", str(tmp_path / "gt.json"),
                     "--out", str(tmp_path / "out"), "--expect", str(expected), "--max-drop", str(TOLERANCE)])
    assert code == 0, capsys.readouterr().err
    stats = json.loads((tmp_path / "out" / "result.json").read_text())["stats"]
    assert stats[0] == pytest.approx(PINNED[(0.05, 0.5)][0], abs=TOLERANCE)  # the sweep's figure at the defaults
