"""The built wheel holds the whole product: detsearch, the mapped models/ and datasets/ folders
and the shipped checkpoint, and nothing at the top level but ``detsearch``. No TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {"detsearch": ROOT / "detsearch", "detsearch/models": ROOT / "models", "detsearch/datasets": ROOT / "datasets"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built without isolation (an isolated build would download setuptools), by the environment's
    # setuptools: it needs `wheel` for bdist_wheel (TensorFlow's dependencies bring it; a bare
    # NumPy-only environment may lack it).
    reason = "builds the wheel offline with this environment's setuptools and wheel: pip install setuptools wheel"
    pytest.importorskip("setuptools", reason=reason)
    pytest.importorskip("wheel", reason=reason)
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # A copy of the tree keeps the checkout free of build/ and *.egg-info.
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            target = build / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(build)], check=True, capture_output=True)
    (built,) = out.glob("detsearch-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_only_detsearch_at_the_top_level(wheel_names):
    top = {name.split("/")[0] for name in wheel_names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"detsearch"}


def test_every_module_of_the_tree_is_installed(wheel_names):
    for installed, folder in MAPPED.items():
        for source in folder.rglob("*.py"):
            relative = source.relative_to(folder)
            if relative.parts[0] in ("models", "datasets") and installed == "detsearch":
                continue  # not under detsearch/ in the tree
            assert f"{installed}/{relative.as_posix()}" in wheel_names, f"{source} is not in the wheel"


@pytest.mark.parametrize("folder", ["checkpoints", "experiments"])
def test_the_shipped_checkpoint_and_experiment_configs_are_installed(wheel_names, folder):
    shipped = ROOT / "models" / folder
    files = [source for source in shipped.rglob("*") if source.is_file()]
    assert files
    for source in files:
        assert f"detsearch/models/{source.relative_to(ROOT / 'models').as_posix()}" in wheel_names


def test_the_installed_package_works_outside_the_checkout(wheel, tmp_path):
    """A plain (not editable) install: the wheel unpacked into a fresh environment that borrows
    this one's dependencies; commands run from a directory outside the checkout."""
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with zipfile.ZipFile(wheel) as archive:  # installing a pure wheel is unpacking it
        archive.extractall(site)
    user = tmp_path / "user"
    user.mkdir()
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}

    def run(*arguments):
        return subprocess.run([str(python), *arguments], cwd=user, env=environment, capture_output=True, text=True,
                              timeout=600)

    where = run("-c", "import detsearch, detsearch.datasets, detsearch.models; "
                      "print(detsearch.__file__, detsearch.datasets.__file__, detsearch.models.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(str(site) in path for path in where.stdout.split()), where.stdout
    fixture = ROOT / "tests" / "data" / "coco_val2014_100"
    common = ["--detections", str(fixture / "instances_val2014_fakebbox100_results.json"),
              "--annotations", str(fixture / "instances_val2014_100.json")]
    swept = run("-m", "detsearch", "sweep", *common, "--score-thresholds", "0.05", "--iou-thresholds", "0.5",
                "--out", "out/sweep", "--no-progress")
    assert swept.returncode == 0, swept.stderr
    evaluated = run("-m", "detsearch", "eval", *common, "--out", "out/eval")
    assert evaluated.returncode == 0, evaluated.stderr
    assert (user / "out" / "sweep" / "result.json").exists() and (user / "out" / "eval" / "result.json").exists()
    checkpoint = run("-c", "from detsearch.models.pipeline import shipped_run; print(shipped_run('retinanet_demo'))")
    assert checkpoint.returncode == 0 and Path(checkpoint.stdout.strip(), "checkpoint").is_file(), checkpoint.stderr
