"""The built wheel holds the whole product: detsearch, the mapped models/ and datasets/ folders
and the shipped checkpoint, and nothing at the top level but ``detsearch``. No TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {"detsearch": ROOT / "detsearch", "detsearch/models": ROOT / "models", "detsearch/datasets": ROOT / "datasets"}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    # Built without isolation, by the environment's setuptools: it needs `wheel` for bdist_wheel
    # (TensorFlow's dependencies bring it; a bare NumPy-only environment may lack it).
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
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
    (wheel,) = out.glob("detsearch-*.whl")
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


def test_the_shipped_checkpoint_is_installed(wheel_names):
    checkpoint = ROOT / "models" / "checkpoints"
    for source in checkpoint.rglob("*"):
        if source.is_file():
            assert f"detsearch/models/{source.relative_to(ROOT / 'models').as_posix()}" in wheel_names
