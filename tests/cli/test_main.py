"""`detsearch.cli.main`, the one error path: bad input and a missing extra are one line on stderr
and exit status 2 (``-v`` adds the traceback); anything else is a traceback.

No TensorFlow needed: a missing extra is simulated by ``sys.modules[name] = None``, which makes
`importlib.util.find_spec` answer None and ``import name`` raise `ModuleNotFoundError`, as on a
core install.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from detsearch import cli
from detsearch.cli import evaluate
from detsearch.errors import EXTRA_MODULES, BadSetting

DATA = Path(__file__).resolve().parents[1] / "data" / "coco_val2014_100"
SWEEP = ["--detections", str(DATA / "instances_val2014_fakebbox100_results.json"),
         "--annotations", str(DATA / "instances_val2014_100.json"), "--score-thresholds", "0.05",
         "--iou-thresholds", "0.5", "--no-progress"]

# Each command that needs an extra, and the module whose absence it must report.
NEEDS = [
    ("search-det", "tensorflow", "tf"),
    ("search-det", "official", "tf"),
    ("search-det", "matplotlib", "plots"),
    ("search-cls", "tensorflow", "tf"),
    ("search-cls", "matplotlib", "plots"),
    ("train", "tensorflow", "tf"),
    ("cache", "tf_keras", "tf"),
    ("prepare-demo", "cv2", "tf"),
    ("sweep", "matplotlib", "plots"),
]


def parsable(command: str) -> list[str]:
    """``command`` with a value for each required flag (the first choice, else a word), so that
    it parses and gets as far as its extras."""
    parser = cli.build_parser(command)
    (sub,) = [action.choices[command] for action in parser._actions if isinstance(action.choices, dict)]
    required = [action for action in sub._actions if action.required and action.option_strings]
    required += [group._group_actions[0] for group in sub._mutually_exclusive_groups if group.required]
    argv = [command]
    for action in required:
        argv += [action.option_strings[0], *([] if action.nargs == 0 else [action.choices[0] if action.choices else "X"])]
    return argv


def missing(monkeypatch, *modules: str) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_tables_name_known_extras():
    for command, extras in cli.EXTRAS.items():
        assert command in cli.COMMANDS
        for extra, modules in extras.items():
            assert set(modules or ()) <= set(EXTRA_MODULES[extra]), (command, extra)


@pytest.mark.parametrize("command, module, extra", NEEDS)
def test_a_missing_extra_is_one_line_before_any_work(command, module, extra, tmp_path, monkeypatch, capsys):
    """``module`` alone is absent, whatever else this environment lacks."""
    monkeypatch.chdir(tmp_path)
    argv = parsable(command)
    missing(monkeypatch, module)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, package=None: None if name == module else object())
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err == f"detsearch {command}: error: {command} needs the {extra} extra: pip install 'detsearch[{extra}]'\n"
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_search_det_on_a_core_install(monkeypatch, capsys):
    """The issue's example, with every module of the tf and plots extras absent."""
    missing(monkeypatch, *EXTRA_MODULES["tf"], *EXTRA_MODULES["plots"])
    code, _, err = run(capsys, "search-det")
    assert (code, err) == (2, "detsearch search-det: error: search-det needs the tf extra: pip install 'detsearch[tf]'\n")


def test_help_needs_no_extra(monkeypatch, capsys):
    missing(monkeypatch, *EXTRA_MODULES["tf"], *EXTRA_MODULES["plots"])
    for command in cli.COMMANDS:
        with pytest.raises(SystemExit) as stop:
            cli.main([command, "--help"])
        assert stop.value.code == 0, command
    assert "usage: detsearch" in capsys.readouterr().out


def test_prepare_demo_needs_opencv_alone(monkeypatch, tmp_path, capsys):
    """Only the part of the tf extra that prepare-demo imports is asked for: past the check, the
    command runs (and here fails on its own bad input)."""
    pytest.importorskip("cv2", reason="needs OpenCV: pip install 'detsearch[tf]'")
    missing(monkeypatch, "tensorflow", "official", "tf_keras")
    code, _, err = run(capsys, "prepare-demo", "--out", str(tmp_path / "demo"), "--num-train", "0")
    assert (code, err) == (2, "detsearch prepare-demo: error: num_train must be an integer >= 1, got 0\n")


def test_the_ray_executor_without_ray(monkeypatch, tmp_path, capsys):
    missing(monkeypatch, "ray")
    code, _, err = run(capsys, "sweep", *SWEEP, "--out", str(tmp_path / "out"), "--executor", "ray")
    assert (code, err) == (2, "detsearch sweep: error: the ray executor needs the ray extra: pip install 'detsearch[ray]'\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module, extra", [("matplotlib.figure", "plots"), ("pycocotools.coco", "coco"),
                                           ("tensorflow", "tf"), ("ray", "ray")])
def test_a_module_of_an_extra_missing_where_no_check_foresaw_it(module, extra, monkeypatch, capsys):
    """A `ModuleNotFoundError` of an extra's module reaching `main` is the same one line."""
    missing(monkeypatch, module.partition(".")[0])

    def run_importing(args):
        __import__(module)
        raise AssertionError("imported a missing module")

    monkeypatch.setattr(evaluate, "run", run_importing)
    code, _, err = run(capsys, "eval", "--detections", "D", "--annotations", "A", "--out", "O")
    assert (code, err) == (2, f"detsearch eval: error: eval needs the {extra} extra: pip install 'detsearch[{extra}]'\n")


def test_a_missing_module_of_no_extra_is_a_bug(monkeypatch):
    def run_importing(args):
        import detsearch_no_such_module  # noqa: F401

    monkeypatch.setattr(evaluate, "run", run_importing)
    with pytest.raises(ModuleNotFoundError, match="detsearch_no_such_module"):
        cli.main(["eval", "--detections", "D", "--annotations", "A", "--out", "O"])


@pytest.mark.parametrize("error", [BadSetting("score_threshold must be in [0, 1], got 2"),
                                   ValueError("score_threshold must be in [0, 1],\n got 2"),
                                   FileNotFoundError(2, "No such file or directory", "a.json"),
                                   cli.BadInput("--out x: exists and is not a directory")])
def test_bad_input_is_one_line_and_exit_2(error, monkeypatch, capsys):
    def failing(args):
        raise error

    monkeypatch.setattr(evaluate, "run", failing)
    code, out, err = run(capsys, "eval", "--detections", "D", "--annotations", "A", "--out", "O")
    assert code == 2 and out == ""
    assert err == f"detsearch eval: error: {' '.join(str(error).split())}\n"


def test_verbose_adds_the_traceback(monkeypatch, capsys):
    def failing(args):
        raise BadSetting("score_threshold must be in [0, 1], got 2")

    monkeypatch.setattr(evaluate, "run", failing)
    code, _, err = run(capsys, "eval", "--detections", "D", "--annotations", "A", "--out", "O", "-v")
    lines = err.splitlines()
    assert code == 2 and lines[0] == "Traceback (most recent call last):" and "in failing" in err
    assert lines[-1] == "detsearch eval: error: score_threshold must be in [0, 1], got 2"


def test_a_type_error_is_a_bug_not_bad_input(monkeypatch):
    def failing(args):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(evaluate, "run", failing)
    with pytest.raises(TypeError, match="unsupported operand"):
        cli.main(["eval", "--detections", "D", "--annotations", "A", "--out", "O"])


def test_a_bad_flag_value_reaches_the_one_error_path(tmp_path, capsys):
    code, _, err = run(capsys, "sweep", *SWEEP, "--out", str(tmp_path / "out"), "--workers", "0")
    assert (code, err) == (2, "detsearch sweep: error: --workers must be an integer >= 1, got 0\n")
    assert not (tmp_path / "out").exists()
    code, _, err = run(capsys, "sweep", *SWEEP, "--out", str(tmp_path / "out"), "--shards", "0")
    assert (code, err) == (2, "detsearch sweep: error: --shards must be an integer >= 1, got 0\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.tf
@pytest.mark.parametrize("flags, message", [
    (["--window", "0"], "window must be an integer >= 1, got 0"),
    (["--max-number-of-steps", "0"], "final_steps must be an integer >= 1, got 0"),
    (["--weight-decays", "0.1,-1"], "--weight-decays: -1 is outside [0, inf]"),
])
def test_search_cls_bad_settings_before_any_work(flags, message, tmp_path, capsys):
    """One line, before MNIST is prepared or a progress bar is drawn (was: 'error: ...')."""
    code, out, err = run(capsys, "search-cls", "--train-url", str(tmp_path / "out"), "--data-url",
                         str(tmp_path / "mnist"), *flags)
    assert (code, out, err) == (2, "", f"detsearch search-cls: error: {message}\n")
    assert list(tmp_path.iterdir()) == []
