"""``per_class_thresholds.json``: reading it (`read_per_class_thresholds`,
`read_per_class_configuration`), the mapping checks, and ``detsearch train
--per-class-thresholds``'s errors before any TensorFlow work. NumPy only."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from detsearch.models.class_thresholds import (
    KEEP_RULE,
    check_class_score_thresholds,
    read_per_class_configuration,
    read_per_class_thresholds,
)

DOCUMENT = {
    "keep": "score > score_threshold",
    "rule": "f1",
    "configuration": {"score_threshold": 0.05, "iou_threshold": 0.5},
    "classes": [{"category_id": 7, "name": "seven", "score_threshold": 0.31},
                {"category_id": 2, "name": "two", "score_threshold": 0.12},
                {"category_id": 3, "name": None, "score_threshold": 1}],
}


def write(tmp_path, document, name="per_class_thresholds.json"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_reads_the_thresholds_and_the_configuration(tmp_path):
    path = write(tmp_path, DOCUMENT)
    thresholds = read_per_class_thresholds(path)
    assert thresholds == {2: 0.12, 3: 1.0, 7: 0.31}
    assert list(thresholds) == [2, 3, 7]
    assert all(type(k) is int and type(v) is float for k, v in thresholds.items())
    assert read_per_class_configuration(str(path)) == {"score_threshold": 0.05, "iou_threshold": 0.5}
    assert DOCUMENT["keep"] == KEEP_RULE


def test_no_keep_no_configuration_and_no_classes_listed_are_accepted(tmp_path):
    path = write(tmp_path, {"classes": []})
    assert read_per_class_thresholds(path) == {}
    assert read_per_class_configuration(path) == {}


def entry(**fields):
    return {"keep": KEEP_RULE, "classes": [{"category_id": 1, "score_threshold": 0.5}, fields]}


@pytest.mark.parametrize("document, message", [
    ("{", "malformed JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
    ("", "malformed JSON"),
    ([1, 2], "must be a JSON object, got a JSON array"),
    ({"keep": "score >= score_threshold", "classes": []}, "\"keep\" is 'score >= score_threshold'"),
    ({"configuration": {}}, "no \"classes\" list of per-category entries"),
    ({"classes": {"1": 0.5}}, "\"classes\" must be a list of per-category entries, got a JSON object"),
    ({"classes": [{"category_id": 1, "score_threshold": 0.5}, 3]}, "classes[1] must be an object, got a JSON int"),
    (entry(score_threshold=0.5), "classes[1] has no category_id"),
    (entry(category_id=2), "classes[1] has no score_threshold"),
    (entry(category_id="2", score_threshold=0.5), "classes[1].category_id must be a non-negative integer, got '2'"),
    (entry(category_id=2.0, score_threshold=0.5), "classes[1].category_id must be a non-negative integer, got 2.0"),
    (entry(category_id=True, score_threshold=0.5), "classes[1].category_id must be a non-negative integer, got True"),
    (entry(category_id=-1, score_threshold=0.5), "classes[1].category_id must be a non-negative integer, got -1"),
    (entry(category_id=1, score_threshold=0.2), "classes[1].category_id 1 repeats classes[0]"),
    (entry(category_id=2, score_threshold=1.5), "classes[1].score_threshold must be a number in [0, 1], got 1.5"),
    (entry(category_id=2, score_threshold=-0.01), "classes[1].score_threshold must be a number in [0, 1], got -0.01"),
    (entry(category_id=2, score_threshold=None), "classes[1].score_threshold must be a number in [0, 1], got None"),
    (entry(category_id=2, score_threshold="0.5"), "classes[1].score_threshold must be a number in [0, 1], got '0.5'"),
    (entry(category_id=2, score_threshold=False), "classes[1].score_threshold must be a number in [0, 1], got False"),
    ('{"classes": [{"category_id": 2, "score_threshold": NaN}]}',
     "classes[0].score_threshold must be a number in [0, 1], got nan"),
])
def test_bad_files_are_one_line_value_errors_naming_the_file(tmp_path, document, message):
    path = write(tmp_path, document)
    with pytest.raises(ValueError) as caught:
        read_per_class_thresholds(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text
    assert len(text.splitlines()) == 1


def test_a_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="per-class thresholds file not found"):
        read_per_class_thresholds(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="per-class thresholds file not found"):
        read_per_class_configuration(tmp_path / "absent.json")


@pytest.mark.parametrize("configuration, message", [
    ([0.05], "\"configuration\" must be an object, got a JSON array"),
    ({"score_threshold": "0.05"}, "configuration.score_threshold must be a finite number, got '0.05'"),
    ({"iou_threshold": True}, "configuration.iou_threshold must be a finite number, got True"),
    ({"class_agnostic": 1}, "configuration.class_agnostic must be true or false, got 1"),
])
def test_a_bad_configuration_is_a_value_error(tmp_path, configuration, message):
    path = write(tmp_path, {**DOCUMENT, "configuration": configuration})
    with pytest.raises(ValueError) as caught:
        read_per_class_configuration(path)
    assert message in str(caught.value)
    assert read_per_class_thresholds(path) == {2: 0.12, 3: 1.0, 7: 0.31}  # the classes do not depend on it


def test_the_swept_axes_are_read(tmp_path):
    configuration = {"score_threshold": 0.05, "iou_threshold": 0.5, "max_detections": 300, "class_agnostic": True}
    path = write(tmp_path, {**DOCUMENT, "configuration": configuration})
    assert read_per_class_configuration(path) == configuration


def test_mapping_checks():
    given = {np.int64(7): np.float32(0.25), 2: 0, 3: 1}
    checked = check_class_score_thresholds(given, category_ids=(2, 3, 7, 9))
    assert checked == {2: 0.0, 3: 1.0, 7: float(np.float32(0.25))}
    assert list(checked) == [2, 3, 7] and all(type(k) is int and type(v) is float for k, v in checked.items())
    assert list(given) == [np.int64(7), 2, 3]  # the caller's mapping is not modified
    assert check_class_score_thresholds({}, category_ids=(1,)) == {}
    assert check_class_score_thresholds({1000: 0.5}) == {1000: 0.5}


@pytest.mark.parametrize("mapping, message", [
    ({5: 0.5, 99: 0.5, 2: 0.1}, r"category ids \[5, 99\] are not among the detector's categories \[1, 2, 3\]"),
    ({1: 1.5}, r"category 1's threshold must be a number in \[0, 1\], got 1.5"),
    ({1: -0.1}, r"category 1's threshold must be a number in \[0, 1\], got -0.1"),
    ({1: math.nan}, r"category 1's threshold must be a number in \[0, 1\], got nan"),
    ({1: True}, r"category 1's threshold must be a number in \[0, 1\], got True"),
    ({1: "0.5"}, r"category 1's threshold must be a number in \[0, 1\], got '0.5'"),
    ({"1": 0.5}, r"category id '1' is not a non-negative int"),
    ({-1: 0.5}, r"category id -1 is not a non-negative int"),
    ([(1, 0.5)], r"must be a mapping of category id -> threshold"),
])
def test_bad_mappings_are_value_errors(mapping, message):
    with pytest.raises(ValueError, match=message):
        check_class_score_thresholds(mapping, category_ids=[3, 1, 2])


# ------------------------------------------------------------------------------------------
# detsearch train --per-class-thresholds: its errors come before TensorFlow is imported


TRAIN = ["train", "--model", "ssd", "--dataset", "demo", "--steps", "1"]


@pytest.mark.tf  # detsearch train checks for its tf extra before its flags
def test_train_flag_without_export_is_one_line(tmp_path, capsys):
    from detsearch import cli

    path = write(tmp_path, DOCUMENT)
    assert cli.main([*TRAIN, "--model-dir", str(tmp_path / "run"), "--per-class-thresholds", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("detsearch train: error: --per-class-thresholds needs --export: the thresholds apply "
                            "to the exported SavedModel\n")
    assert captured.out == ""
    assert not (tmp_path / "run").exists()


@pytest.mark.tf  # detsearch train checks for its tf extra before its flags
def test_train_flag_with_a_bad_file_is_one_line(tmp_path, capsys):
    from detsearch import cli

    path = write(tmp_path, entry(category_id=2, score_threshold=2))
    arguments = [*TRAIN, "--model-dir", str(tmp_path / "run"), "--export", str(tmp_path / "export")]
    assert cli.main([*arguments, "--per_class_thresholds", str(path)]) == 2
    assert capsys.readouterr().err == (f"detsearch train: error: --per-class-thresholds {path}: "
                                       f"classes[1].score_threshold must be a number in [0, 1], got 2\n")
    assert cli.main([*arguments, "--per-class-thresholds", str(tmp_path / "absent.json")]) == 2
    assert capsys.readouterr().err == (f"detsearch train: error: --per-class-thresholds {tmp_path / 'absent.json'}: "
                                       f"per-class thresholds file not found\n")
    assert not (tmp_path / "run").exists() and not (tmp_path / "export").exists()


def test_train_help_describes_the_flag(capsys):
    from detsearch import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--per-class-thresholds FILE" in text and "(needs --export)" in text
    assert "per_class_thresholds.json" in text


def test_train_flag_errors_import_no_tensorflow(tmp_path):
    path = write(tmp_path, DOCUMENT)
    code = ("import sys; from detsearch import cli; "
            f"status = cli.main({[*TRAIN, '--model-dir', str(tmp_path / 'run'), '--per-class-thresholds', str(path)]!r}); "
            "print(status, any(name.split('.')[0] == 'tensorflow' for name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False"]
