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
        write_outputs(sweep(cache, dataset, ParamSpec(score_threshold=[0.05, 0.4], iou_threshold=[0.5, 0.7])),
                      {str(tmp_path / "one")!r})
        assert "matplotlib.pyplot" not in sys.modules
        assert matplotlib.rcParams._get_backend_or_none() == before, (before, matplotlib.rcParams._get_backend_or_none())
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for kind in ("one", "two"):
        out = tmp_path / kind
        assert sorted(p.name for p in out.iterdir()) == ["heatmap.png", "report.md", "result.json"]
        assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "**best**" in (out / "report.md").read_text()
    assert "| nms_score | nms_iou | score | iou |" in (tmp_path / "two" / "report.md").read_text()
