"""Every file of the bad-input corpus (tests/data/bad/, listed in its README.md) gives one clear
line naming the file and what is wrong: exit status 2 from ``python -m detsearch sweep`` with no
traceback and nothing written, or the reader's own error class from the dataset readers and
`ParamSpec`. The ``good/`` files next to them pass, so each failure comes from the one thing
broken in its file."""

from __future__ import annotations

import filecmp
import importlib.util
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from detsearch.datasets.coco import load_coco
from detsearch.datasets.detection import DatasetError
from detsearch.datasets.voc import load_voc
from detsearch import cli
from detsearch.params import ParamSpec

REPO = Path(__file__).resolve().parents[2]
BAD = REPO / "tests" / "data" / "bad"
GOOD_ANNOTATIONS = BAD / "good" / "annotations.json"
GOOD_DETECTIONS = BAD / "good" / "detections.json"
THRESHOLDS = ["--score-thresholds", "0.1,0.5", "--iou-thresholds", "0.5"]

# file (relative to tests/data/bad) -> what the sweep's one line must contain after the file name
SWEEP_ERRORS = {
    "annotations/truncated.json": "malformed JSON (Expecting value at line 32 column 2)",
    "annotations/empty.json": "malformed JSON (Expecting value at line 1 column 1)",
    "annotations/not_utf8.json": "cannot read annotations: 'utf-8' codec can't decode byte 0xff",
    "annotations/top_level_list.json": "COCO annotations must be a JSON object, got a JSON list",
    "annotations/missing_annotations.json": "missing or non-list 'annotations'",
    "annotations/image_id_string.json": "images[1] has no integer 'id'",
    "annotations/image_id_huge.json": "images[1] has no integer 'id' (64-bit)",
    "annotations/duplicate_image_id.json": "image id 1 appears twice in 'images'",
    "annotations/image_height_text.json": "images[0] (id 1): 'height' '100px' is not a whole number of pixels",
    "annotations/image_height_huge.json": "images[0] (id 1): 'height' 1000000000000000000000000000000 is not a whole number",
    "annotations/annotation_unknown_image.json": "annotations[2] (id 3): image_id 7 is not in 'images'",
    "annotations/annotation_unknown_category.json": "annotations[1] (id 2): category_id 9 is not in 'categories'",
    "annotations/bbox_nan.json": "annotations[0] (id 1): bbox must be four finite numbers [x, y, w, h], got [nan, 20, 30, 40]",
    "annotations/bbox_huge.json": "annotations[0] (id 1): bbox must be four finite numbers",
    "annotations/bbox_inverted.json": "annotations[0] (id 1): bbox has negative width or height [10, 20, -30, 40]",
    "annotations/bbox_three_numbers.json": "annotations[0] (id 1): bbox must be four finite numbers [x, y, w, h], got [10, 20, 30]",
    "annotations/area_missing.json": "annotations[0] (id 1): missing or non-finite 'area'",
    "annotations/area_nan.json": "annotations[0] (id 1): missing or non-finite 'area'",
    "detections/truncated.json": "malformed JSON: Expecting value",
    "detections/not_a_list.json": "detections must be a JSON list of records, got dict",
    "detections/empty_list.json": "no detections",
    "detections/score_nan.json": "record 1: score nan is not finite",
    "detections/score_inf.json": "record 1: score inf is not finite",
    "detections/score_above_one.json": "record 1: score 1.5 is outside [0, 1]",
    "detections/score_string.json": "record 1: score must be a number, got '0.6'",
    "detections/score_missing.json": "record 1 lacks 'score'",
    "detections/score_huge_integer.json": "record 1: score 1" + "0" * 59 + "... (401 characters) is outside [0, 1]",
    "detections/bbox_inverted.json": "record 2: bbox [1, 1, 28, -28] has negative width or height",
    "detections/bbox_nan.json": "record 2: bbox [1, nan, 28, 28] is not finite",
    "detections/bbox_huge.json": "record 2: bbox [1e+39, 1, 28, 28] lies beyond the float32 range",
    "detections/bbox_huge_integer.json": "record 2: bbox [10000000000000000000000000000000000000000000000000000000000... (414 characters) is not finite",
    "detections/image_id_float.json": "record 0: image_id must be an integer, got 1.0",
    "detections/unknown_image.json": "record 3: image_id 424242 is not in the annotations",
    "detections/unknown_category.json": "record 3: category_id 3 is not in the annotations",
    "caches/wrong_version": "meta.json: cache format version 3 is not supported (this detsearch reads versions 1, 2)",
    "caches/meta_edited": "meta.json: meta_sha256 does not match the content",
    "caches/meta_truncated": "meta.json: not valid JSON",
    "caches/flipped_byte": "entry_score.npy: SHA-256 checksum mismatch",
    "caches/truncated_array": "row_boxes.npy: file is truncated: 153 bytes, expected 192 for shape (4, 4)",
    "caches/missing_array": "entry_class.npy: missing (listed in meta.json)",
    "caches/nan_score": "entry_score[1] = nan is not finite",
    "caches/inf_box": "row_boxes[2] = [1.0, 1.0, 29.0, inf] (ymin, xmin, ymax, xmax) is not finite",
    "caches/inverted_box": "row_boxes[2] = [34.0, 1.0, 29.0, 29.0] (ymin, xmin, ymax, xmax) has ymin > ymax",
    "caches/decreasing_offsets": "entry_offsets[2] = 4 is less than entry_offsets[1] = 5",
    "caches/unknown_image": "image id 7 is not in",
    "caches/unknown_category": "category id 3 is not in",
    "caches/no_detections": "the cache holds no detections",
    "caches/not_a_cache": "meta.json: missing",
    "caches/score_floor_0.5": "score_threshold 0.1 is below the cache's score floor 0.5",
}

# files the sweep accepts on purpose (README.md says why)
SWEEP_ACCEPTS = {"annotations/bbox_zero_area.json"}

# file -> (reader, what the DatasetError must contain after the file name)
READER_ERRORS = {
    "annotations/truncated.json": ("coco", "not a readable json file (Expecting value: line 32 column 2"),
    "annotations/empty.json": ("coco", "not a readable json file (Expecting value: line 1 column 1"),
    "annotations/not_utf8.json": ("coco", "not a readable json file ('utf-8' codec can't decode byte 0xff"),
    "annotations/top_level_list.json": ("coco", "top level is list, expected an object"),
    "annotations/missing_annotations.json": ("coco", "missing list 'annotations' (not a COCO instances file)"),
    "annotations/image_id_string.json": ("coco", "images[1]: 'id' '2' is not a 64-bit int"),
    "annotations/image_id_huge.json": ("coco", "images[1]: 'id' 1000000000000000000000000000000 is not a 64-bit int"),
    "annotations/duplicate_image_id.json": ("coco", "image id 1: duplicate image id"),
    "annotations/image_height_text.json": ("coco", "image id 1 (a.jpg): 'height' '100px' is not a positive int"),
    "annotations/image_height_huge.json": ("coco", "image id 1 (a.jpg): 'height' 1000000000000000000000000000000 is not a positive int"),
    "annotations/annotation_unknown_image.json": ("coco", "annotation id 3: unknown image id 7"),
    "annotations/annotation_unknown_category.json": ("coco", "annotation id 2 (image id 1, a.jpg): unknown category id 9"),
    "annotations/bbox_nan.json": ("coco", "annotation id 1 (image id 1, a.jpg): box [20.0, nan, 60.0, nan] is not 4 finite numbers"),
    "annotations/bbox_huge.json": ("coco", "annotation id 1 (image id 1, a.jpg): 'bbox' [1000"),
    "annotations/bbox_inverted.json": ("coco", "annotation id 1 (image id 1, a.jpg): bbox [x, y, width, height] = [10, 20, -30, 40] has zero or negative size"),
    "annotations/bbox_zero_area.json": ("coco", "annotation id 1 (image id 1, a.jpg): bbox [x, y, width, height] = [10, 20, 0, 40] has zero or negative size"),
    "annotations/bbox_three_numbers.json": ("coco", "annotation id 1 (image id 1, a.jpg): 'bbox' [10, 20, 30] is not [x, y, width, height] numbers"),
    "annotations/area_nan.json": ("coco", "annotation id 1 (image id 1, a.jpg): 'area' nan is not a number >= 0"),
    "voc/truncated.xml": ("voc", "not a readable XML file (unclosed token"),
    "voc/wrong_root.xml": ("voc", "root element <annotations>, expected <annotation>"),
    "voc/missing_filename.xml": ("voc", "missing <filename>"),
    "voc/missing_size.xml": ("voc", "missing <size>"),
    "voc/size_not_a_number.xml": ("voc", "<size><width> is 'wide', not a positive integer"),
    "voc/size_zero.xml": ("voc", "<size><height> is '0', not a positive integer"),
    "voc/missing_name.xml": ("voc", "object 1: missing <name>"),
    "voc/missing_bndbox.xml": ("voc", "object 1 (dog): missing <bndbox>"),
    "voc/missing_xmax.xml": ("voc", "object 1 (dog): <bndbox><xmax> is None, not a number"),
    "voc/coordinate_nan.xml": ("voc", "object 1 (dog): <bndbox><ymin> is 'nan', not a number"),
    "voc/inverted_box.xml": ("voc", "object 1 (dog) [bndbox xmin=70 ymin=6 xmax=51 ymax=25]: box (ymin, xmin, ymax, xmax) = [5.0, 69.0, 25.0, 51.0] has zero or negative size"),
    "voc/zero_area_box.xml": ("voc", "object 1 (dog) [bndbox xmin=51 ymin=6 xmax=50 ymax=25]: box (ymin, xmin, ymax, xmax) = [5.0, 50.0, 25.0, 50.0] has zero or negative size (height 20, width 0)"),
    "voc/box_outside_image.xml": ("voc", "object 1 (dog) [bndbox xmin=51 ymin=6 xmax=500 ymax=25]: box (ymin, xmin, ymax, xmax) = [5.0, 50.0, 25.0, 500.0] lies outside the 100x120"),
    "voc/difficult_two.xml": ("voc", "object 1 (dog): <difficult> is '2', expected 0 or 1"),
}

# files the dataset readers accept on purpose (README.md says why)
READER_ACCEPTS = {"annotations/area_missing.json"}

# case of param_specs.json -> (error class, message)
PARAM_SPEC_ERRORS = {
    "momentum_string": (TypeError, "momentum must be a number, got '0.9' (str)"),
    "momentum_bool": (TypeError, "momentum must be a number, got True (bool)"),
    "weight_decay_empty_list": (ValueError, "candidate list for weight_decay is empty"),
    "weight_decay_string_in_list": (TypeError, "weight_decay[1]: weight_decay must be a number, got '1e-4' (str)"),
    "weight_decay_nested_list": (TypeError, "weight_decay[0]: weight_decay must be a number, got [0.001] (list)"),
    "weight_decay_object": (TypeError, "weight_decay must be a number, got {'value': 0.001} (dict)"),
    "learning_rate_misspelled": (ValueError, "unknown parameter 'learnig_rate'"),
    "learning_rate_zero": (ValueError, "learning_rate must be > 0, got 0.0"),
    "score_threshold_above_one": (ValueError, "score_threshold must be in [0, 1], got 1.5"),
    "iou_threshold_negative_in_list": (ValueError, "iou_threshold[1]: iou_threshold must be in [0, 1], got -0.1"),
}

# bad command-line values (flags changed from a good run) -> the one line
ARGUMENT_ERRORS = [
    (["--score-thresholds", "1.5"], "--score-thresholds: 1.5 is outside [0, 1]"),
    (["--score-thresholds", "-0.1"], "--score-thresholds: -0.1 is outside [0, 1]"),
    (["--score-thresholds", "nan"], "--score-thresholds: nan is outside [0, 1]"),
    (["--iou-thresholds", "inf"], "--iou-thresholds: inf is outside [0, 1]"),
    (["--iou-thresholds", "1e400"], "--iou-thresholds: 1e400 is outside [0, 1]"),
    (["--iou-thresholds", "half"], "--iou-thresholds: 'half' is not a number"),
    (["--score-thresholds", ""], "--score-thresholds: no thresholds given"),
    (["--score-thresholds", " , "], "--score-thresholds: no thresholds given"),
    (["--nms-iou-thresholds", "0.5"], "need a two-stage --cache"),
    (["--budget", "nan"], "--budget must be a number >= 0, got nan"),
    (["--objective", "map_at_budget"], "--objective map_at_budget needs --budget"),
    (["--objective", "map_at_budget", "--budget", "0.5"], "no configuration has <= 0.5 detections per image"),
    (["--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["--max-total-detections", "0"], "--max-total-detections must be an integer >= 1, got 0"),
    (["--num-proposals", "5"], "num_proposals is a setting of two-stage sweeps"),
    (["--score-floor", "2"], "score_floor must be in [0, 1], got 2.0"),
    (["--score-floor", "0.95"], "no detections with score >= --score-floor 0.95"),
    (["--score-floor", "0.3"], "score_threshold 0.1 is below the cache's score floor 0.3: entries under the floor were not recorded"),
    (["--workers", "two"], "argument --workers: invalid int value: 'two'"),
    (["--per-class", "precision:0.9", "--confidence", "0"], "--confidence must be a number in (0, 1), got 0"),
    (["--per-class", "precision:0.9", "--confidence", "1"], "--confidence must be a number in (0, 1), got 1"),
    (["--per-class", "recall:0.5", "--confidence", "-0.5"], "--confidence must be a number in (0, 1), got -0.5"),
    (["--per-class", "recall:0.5", "--confidence", "nan"], "--confidence must be a number in (0, 1), got nan"),
    (["--per-class", "precision:0.9", "--confidence", "inf"], "--confidence must be a number in (0, 1), got inf"),
    (["--per-class", "precision:0.9", "--confidence", "high"], "argument --confidence: invalid float value: 'high'"),
    (["--confidence", "0.95"], "--confidence needs a --per-class precision:P or recall:R rule, got no --per-class"),
    (["--per-class", "f1", "--confidence", "0.95"], "--confidence needs a --per-class precision:P or recall:R rule, got --per-class f1"),
]


def corpus_files() -> set[str]:
    """Every bad input of the corpus: files, and cache directories as one input each."""
    found = set()
    for path in BAD.rglob("*"):
        relative = path.relative_to(BAD)
        if relative.parts[0] in ("good", "__pycache__") or relative.name in ("README.md", "make_bad.py", "param_specs.json"):
            continue
        if relative.parts[0] == "caches":
            if len(relative.parts) > 1:
                found.add("/".join(relative.parts[:2]))
        elif path.is_file():
            found.add(relative.as_posix())
    return found


def run_sweep(arguments, out: Path, capsys, caplog):
    """cli.main in-process: (exit status, stdout, stderr); warnings or log records fail the test."""
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = cli.main(["sweep", "--no-progress", *arguments, "--out", str(out)])
        except SystemExit as stop:  # argparse
            code = stop.code
    captured = capsys.readouterr()
    assert not caught, [str(w.message) for w in caught]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    return code, captured.out, captured.err


def sweep_arguments(relative: str) -> list[str]:
    path = str(BAD / relative)
    if relative.startswith("annotations/"):
        return ["--detections", str(GOOD_DETECTIONS), "--annotations", path, *THRESHOLDS]
    if relative.startswith("detections/"):
        return ["--detections", path, "--annotations", str(GOOD_ANNOTATIONS), *THRESHOLDS]
    return ["--cache", path, "--annotations", str(GOOD_ANNOTATIONS), *THRESHOLDS]


def assert_one_line_error(code, out, err, *fragments):
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("detsearch sweep: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# --------------------------------------------------------------------------------------------
# the corpus itself


def test_every_corpus_file_has_an_expected_error_and_a_readme_line():
    covered = set(SWEEP_ERRORS) | SWEEP_ACCEPTS | set(READER_ERRORS) | READER_ACCEPTS
    assert corpus_files() == covered
    readme = (BAD / "README.md").read_text()
    for relative in covered:
        assert f"`{relative}`" in readme, relative
    for case in json.loads((BAD / "param_specs.json").read_text()):
        assert f"`{case}`" in readme, case
    assert set(json.loads((BAD / "param_specs.json").read_text())) == set(PARAM_SPEC_ERRORS)


def test_corpus_is_what_make_bad_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_bad", BAD / "make_bad.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path)])
    for name in module.OWNED:
        if (tmp_path / name).is_file():
            assert filecmp.cmp(tmp_path / name, BAD / name, shallow=False), name
            continue
        comparison = filecmp.dircmp(tmp_path / name, BAD / name, ignore=["__pycache__"])
        stack = [comparison]
        while stack:
            current = stack.pop()
            assert not current.left_only and not current.right_only, (current.left, current.left_only, current.right_only)
            _, mismatch, errors = filecmp.cmpfiles(current.left, current.right, current.common_files, shallow=False)
            assert not mismatch and not errors, (current.left, mismatch, errors)
            stack.extend(current.subdirs.values())


# --------------------------------------------------------------------------------------------
# python -m detsearch sweep


def test_good_inputs_sweep(tmp_path, capsys, caplog):
    for number, source in enumerate((["--detections", str(GOOD_DETECTIONS)], ["--cache", str(BAD / "good" / "cache")])):
        out = tmp_path / f"out{number}"
        code, stdout, err = run_sweep([*source, "--annotations", str(GOOD_ANNOTATIONS), *THRESHOLDS], out, capsys, caplog)
        assert code == 0 and err == "" and "chosen (map)" in stdout
        pictures = ["f1_curve.png", "heatmap.png", "pareto.png", "per_class.png", "pr_curve.png"]
        assert sorted(p.name for p in out.iterdir()) == pictures + ["report.md", "result.json"]


@pytest.mark.parametrize("relative", sorted(SWEEP_ERRORS))
def test_bad_file_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, caplog, relative):
    out = tmp_path / "out"
    code, stdout, err = run_sweep(sweep_arguments(relative), out, capsys, caplog)
    assert_one_line_error(code, stdout, err, str(BAD / relative), SWEEP_ERRORS[relative])
    assert not out.exists()


@pytest.mark.parametrize("relative", sorted(SWEEP_ACCEPTS))
def test_accepted_file_sweeps(tmp_path, capsys, caplog, relative):
    code, stdout, err = run_sweep(sweep_arguments(relative), tmp_path / "out", capsys, caplog)
    assert code == 0, err


@pytest.mark.parametrize("changes, message", ARGUMENT_ERRORS, ids=[" ".join(c) for c, _ in ARGUMENT_ERRORS])
def test_bad_argument_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, caplog, changes, message):
    flags = {"--detections": str(GOOD_DETECTIONS), "--annotations": str(GOOD_ANNOTATIONS),
             "--score-thresholds": "0.1,0.5", "--iou-thresholds": "0.5"}
    flags.update(zip(changes[::2], changes[1::2]))
    out = tmp_path / "out"
    code, stdout, err = run_sweep([item for pair in flags.items() for item in pair], out, capsys, caplog)
    assert_one_line_error(code, stdout, err, message)
    assert not out.exists()


def test_out_that_is_a_file_fails_before_any_work(tmp_path, capsys, caplog):
    out = tmp_path / "taken"
    out.write_text("mine")
    code, stdout, err = run_sweep(sweep_arguments("detections/score_nan.json"), out, capsys, caplog)
    assert_one_line_error(code, stdout, err, f"--out {out}: exists and is not a directory")
    assert out.read_text() == "mine"


def test_bad_input_leaves_an_earlier_result_untouched(tmp_path, capsys, caplog):
    out = tmp_path / "out"
    code, _, err = run_sweep(["--detections", str(GOOD_DETECTIONS), "--annotations", str(GOOD_ANNOTATIONS), *THRESHOLDS], out, capsys, caplog)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for relative in ("annotations/bbox_nan.json", "detections/score_inf.json", "caches/flipped_byte"):
        code, stdout, err = run_sweep(sweep_arguments(relative), out, capsys, caplog)
        assert_one_line_error(code, stdout, err, SWEEP_ERRORS[relative])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_as_a_process_exit_2_one_line_and_no_tensorflow(tmp_path):
    """The real entry point: exit status and stderr as a user sees them; the one-stage sweep and
    the dataset readers never import TensorFlow."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for relative in ("annotations/image_id_huge.json", "caches/wrong_version"):
        done = subprocess.run([sys.executable, "-m", "detsearch", "sweep", *sweep_arguments(relative), "--out", str(tmp_path / "out")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert_one_line_error(done.returncode, done.stdout, done.stderr, SWEEP_ERRORS[relative])
    check = f"""
import sys
from detsearch import cli
import detsearch.datasets.coco, detsearch.datasets.voc
code = cli.main(["sweep", "--no-progress", "--detections", {str(GOOD_DETECTIONS)!r}, "--annotations", {str(GOOD_ANNOTATIONS)!r},
                 "--score-thresholds", "0.1", "--iou-thresholds", "0.5", "--out", {str(tmp_path / "good")!r}])
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "tf_keras", "keras"))
print(code, loaded)
"""
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout + done.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# dataset readers and ParamSpec


def read_with(reader: str, path: Path):
    if reader == "coco":
        return load_coco(path, BAD, check_images=False)
    return load_voc(path, check_images=False)


def test_good_files_read():
    assert read_with("coco", GOOD_ANNOTATIONS).num_boxes == 3
    assert read_with("voc", BAD / "good" / "voc.xml").num_boxes == 2
    assert read_with("coco", BAD / "annotations" / "area_missing.json").examples[0].areas[0] == 1200


@pytest.mark.parametrize("relative", sorted(READER_ERRORS))
def test_bad_file_gives_a_dataset_error_naming_file_and_record(relative):
    reader, message = READER_ERRORS[relative]
    with pytest.raises(DatasetError) as caught:
        read_with(reader, BAD / relative)
    text = str(caught.value)
    assert text.startswith(f"{BAD / relative}: ") and message in text, text
    assert "\n" not in text


@pytest.mark.parametrize("case", sorted(PARAM_SPEC_ERRORS))
def test_bad_param_spec(case):
    error, message = PARAM_SPEC_ERRORS[case]
    with pytest.raises(error) as caught:
        ParamSpec.from_dict(json.loads((BAD / "param_specs.json").read_text())[case])
    assert type(caught.value) is error and message in str(caught.value)


def test_param_spec_checks_numpy_arrays_like_lists():
    assert ParamSpec(weight_decay=np.array([1e-3, 1e-4])).candidates("weight_decay") == (1e-3, 1e-4)
    assert ParamSpec(momentum=np.array(0.9)).momentum == 0.9
    with pytest.raises(ValueError, match=r"weight_decay\[1\]: weight_decay must be >= 0"):
        ParamSpec(weight_decay=np.array([1e-3, -1.0]))
    with pytest.raises(ValueError, match=r"learning_rate\[0\]: learning_rate must be finite"):
        ParamSpec(learning_rate=np.array([np.nan]))
    with pytest.raises(TypeError, match=r"array of shape \(2, 1\)"):
        ParamSpec(momentum=np.array([[0.9], [0.5]]))
