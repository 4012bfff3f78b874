"""``detsearch cache`` on Ray tasks (each worker rebuilds the shipped demo RetinaNet experiment
from its config and checkpoint) writes the cache the in-process recording writes: the same
files, byte for byte."""

from pathlib import Path

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

FLOOR = 0.05


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory, real_mnist_dir):
    """A small demo set as a COCO folder (annotations json, image directory)."""
    from detsearch.datasets import demo

    root = tmp_path_factory.mktemp("demo") / "set"
    demo.build_demo(root, num_train=1, num_val=5, image_size=128, seed=4, mnist_dir=real_mnist_dir)
    return root / "instances_val.json", root / "val"


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_cache_on_ray_equals_the_cache_in_process(ray_executor, coco_set, tmp_path, capsys):
    import json

    from detsearch import cli
    from detsearch.detection.cache import read_cache

    annotations, images = coco_set
    common = ["cache", "--model-dir", "retinanet_demo", "--dataset", "coco", "--annotations", str(annotations),
              "--images", str(images), "--score-floor", str(FLOOR)]
    assert cli.main([*common, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["kind"], summary["images"]) == ("one_stage", 5) and summary["entries"] > 0
    assert cli.main([*common, "--out", str(tmp_path / "local")]) == 0, capsys.readouterr().err
    assert files(tmp_path / "ray") == files(tmp_path / "local")
    assert read_cache(tmp_path / "ray").meta.source["checkpoint"].endswith("ckpt-1500")
