"""mAP regression: the shipped demo RetinaNet (``models/checkpoints/retinanet_demo``) on the demo's
validation records, through ``detsearch search-det`` as a user runs it (the cache, the sweep,
thresholds.yaml), with Model Garden's own evaluation at the chosen and the config's rows."""

from __future__ import annotations

import json

import pytest

from detsearch.datasets import demo

pytestmark = [pytest.mark.tf, pytest.mark.slow]

# Measured with the shipped checkpoint on the full demo val split (500 images, seed 0):
# (mAP, AP50, detections per image). A real regression (model, post-processing, cache, sweep or
# evaluation) moves them by far more than TOLERANCE; CPU kernel differences by far less.
PINNED = {
    (0.05, 0.5): (0.4334985906148793, 0.6883489840242113, 45.25),  # the config's (Model Garden's defaults)
    (0.3, 0.5): (0.3937558537290554, 0.6081657468382399, 3.574),
}
TOLERANCE = 0.003


def test_shipped_checkpoint_map_is_pinned_and_model_gardens_own(sandbox, real_mnist_dir, tmp_path, capsys):
    from detsearch import cli

    assert demo.default_demo_dir().is_relative_to(sandbox)  # never ./data
    out = tmp_path / "out"
    code = cli.main(["search-det", "--model-dir", "retinanet_demo", "--out", str(out), "--score-thresholds", "0.05,0.3",
                     "--iou-thresholds", "0.5", "--verify", "--verify-rows", "2"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "retinanet_resnetfpn_coco" and summary["checkpoint"].endswith("ckpt-1500")
    assert summary["images"] == 500 and (out / "thresholds.yaml").is_file()
    rows = json.loads((out / "sweep" / "result.json").read_text())["table"]
    for row in rows:
        ap, ap50, dets = PINNED[(row["params"]["score_threshold"], row["params"]["iou_threshold"])]
        assert row["stats"][0] == pytest.approx(ap, abs=TOLERANCE)
        assert row["stats"][1] == pytest.approx(ap50, abs=TOLERANCE)
        assert row["dets_per_image"] == pytest.approx(dets, rel=0.02)
    verification = summary["model_garden_verification"]
    assert verification["stats_compared"] == 24 and verification["mismatches"] == []
