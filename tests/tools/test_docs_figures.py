"""tools/docs_figures.py: finding a figure in the docs, reading benchmark tables, the docs quoting
the code's constants as the script reads them, and docs/models.md quoting the shipped
checkpoint's pinned figures as the demo group formats them (no TensorFlow, nothing trained)."""

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "tools" / "docs_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_quote_is_found_across_line_breaks_and_a_wrong_value_is_not(tmp_path):
    figures = load()
    (tmp_path / "doc.md").write_text("# Title\n\nthe choice gave up\n   -0.0008 AP for -71 %\ndetections.\n")
    docs = figures.Docs(tmp_path)
    assert docs.line_of("doc.md", "gave up -0.0008 AP for -71 % detections") == 3
    right = figures.figure("x", "-0.0008", "cmd", ("doc.md", "-0.0008 AP for -71 %"))
    wrong = figures.figure("x", "-0.0009", "cmd", ("doc.md", "-0.0009 AP for -72 %"))
    assert docs.where(right) == (["doc.md:4"], True)
    where, found = docs.where(wrong)
    assert not found and "NOT QUOTED" in where[0]
    timing = figures.figure("t", "20 s", "cmd", ("doc.md", "-0.0008 AP for -70 %", "the choice gave"), timing=True)
    assert docs.where(timing) == (["doc.md:3 (quotes another measurement)"], False)


def test_markdown_rows_skip_the_header_and_stop_at_the_table_end():
    figures = load()
    text = "title\n| a | b |\n|---:|---|\n| 1 | x |\n| 2 | y |\n\n| 3 | z |\n"
    assert figures.markdown_rows(text) == [["1", "x"], ["2", "y"]]
    assert figures.markdown_rows("x\nsplits:\n| t | v |\n|---|---|\n| 0 | +1 |\n", after="splits") == [["0", "+1"]]


def test_the_docs_quote_the_constants_as_the_code_has_them(tmp_path, capsys):
    figures = load()
    assert figures.main(["--only", "constants", "--check", "--work", str(tmp_path)]) == 0, capsys.readouterr().out


def test_list_names_every_group(capsys):
    figures = load()
    assert figures.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} (" in out for name in figures.GROUPS)
    # the deleted presets and their benchmark are gone from every group
    assert not any(word in out for word in ("ssd_tiny_demo", "--train-run", "bench_cache", "tiny SSD", "preset"))


def test_models_md_quotes_the_shipped_checkpoint_as_pinned():
    """The demo group's ``demo.config_row`` (``search-det --model-dir retinanet_demo``, the
    config's thresholds) formatted from the figures tests/models/test_regression.py pins is what
    docs/models.md says."""
    figures = load()
    tree = ast.parse((ROOT / "tests" / "models" / "test_regression.py").read_text())
    pinned = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(target, "id", None) == "PINNED" for target in node.targets))
    ap, ap50, dets = pinned[(0.05, 0.5)]
    row = {"params": {"score_threshold": 0.05, "iou_threshold": 0.5}, "map": ap, "ap50": ap50, "dets_per_image": dets}
    rows = figures.search_det_figures({"config_row": row, "chosen": row, "highest": row})
    assert rows["config_row"] == f"AP {ap:.4f} / AP50 {ap50:.4f} with {dets:.1f} detections per image"
    assert figures.Docs(ROOT).line_of("docs/models.md", f"it reaches {rows['config_row']}") is not None
