"""The sweep's report and heatmap: written atomically beside result.json, drawn without pyplot."""

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_outputs_of_both_kinds_choose_no_matplotlib_backend(tmp_path):
    # A fresh process: pyplot, once imported, would pick a backend for the whole process.
    script = textwrap.dedent(f"""
        import sys
        import matplotlib
        from detsearch.detection.report import write_outputs
        from detsearch.detection.sweep import sweep
        from detsearch.params import ParamSpec
        from tests.detection.sweep_cases import random_case

        before = matplotlib.rcParams._get_backend_or_none()
        cache, dataset = random_case(5, "two_stage", num_images=4)
        spec = ParamSpec(nms_score_threshold=[0.0, 0.4], nms_iou_threshold=[0.5, 0.7], score_threshold=[0.05, 0.4],
                         iou_threshold=[0.5])
        write_outputs(sweep(cache, dataset, spec, nms_backend="reference"), {str(tmp_path / "two")!r})
        cache, dataset = random_case(5, "one_stage", num_images=4)
        write_outputs(sweep(cache, dataset, ParamSpec(score_threshold=[0.05, 0.4], iou_threshold=[0.5, 0.7]), per_class="f1"),
                      {str(tmp_path / "one")!r})
        assert "matplotlib.pyplot" not in sys.modules
        assert matplotlib.rcParams._get_backend_or_none() == before, (before, matplotlib.rcParams._get_backend_or_none())
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for kind in ("one", "two"):
        out = tmp_path / kind
        written = ["f1_curve.png", "heatmap.png", "pareto.png", "per_class.png", "pr_curve.png", "report.md", "result.json"]
        if kind == "one":
            written.append("per_class_thresholds.json")
        assert sorted(p.name for p in out.iterdir()) == sorted(written)
        for picture in (name for name in written if name.endswith(".png")):
            assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "**chosen**" in (out / "report.md").read_text()
    assert "| nms_score | nms_iou | score | iou |" in (tmp_path / "two" / "report.md").read_text()


def test_report_names_the_trade_off_per_class_and_holdout(tmp_path):
    from detsearch.detection.report import per_class_document, render_report, tradeoff_line, write_outputs
    from detsearch.detection.sweep import sweep
    from detsearch.params import ParamSpec
    from tests.detection.sweep_cases import random_case

    cache, dataset = random_case(11, "one_stage", num_images=12, max_rows=60)
    spec = ParamSpec(score_threshold=[0.05, 0.3, 0.6], iou_threshold=[0.3, 0.5, 0.7])
    result = sweep(cache, dataset, spec, tolerance=0.05, per_class="precision:0.5", holdout=0.25, replicates=20)
    report = render_report(result)
    assert tradeoff_line(result) in report
    top, best = result.top_row, result.best_row
    assert dict(best.params) != dict(top.params) and best.dets_per_image < top.dets_per_image  # the tolerance traded here
    assert tradeoff_line(result).startswith(f"{best.stats[0] - top.stats[0]:+.4f} AP, ")
    assert tradeoff_line(sweep(cache, dataset, spec, tolerance=0)) == (
        "the highest AP is also the fewest detections within tolerance 0")
    assert "## Held-out images" in report and "## Per class" in report
    document = per_class_document(result)
    assert document["keep"] == "score > score_threshold" and document["configuration"] == result.best_params
    assert [c["category_id"] for c in document["classes"]] == [c.category_id for c in result.per_class.classes]
    (tmp_path / "per_class_thresholds.json").write_text("{}")
    write_outputs(sweep(cache, dataset, spec), tmp_path)  # no --per-class: no stale per-class file
    assert not (tmp_path / "per_class_thresholds.json").exists()
