"""The cache writer on Ray tasks (each worker rebuilds the shipped tiny SSD from its checkpoint
directory) writes the cache the in-process writer writes: same files, byte for byte."""

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

RUN = Path(__file__).resolve().parents[2] / "models" / "checkpoints" / "ssd_tiny_demo"
FLOOR = 0.05


@pytest.fixture(scope="module")
def val_set(tmp_path_factory, real_mnist_dir):
    from detsearch.datasets import demo

    root = tmp_path_factory.mktemp("demo") / "set"
    demo.build_demo(root, num_train=1, num_val=5, image_size=128, seed=4, mnist_dir=real_mnist_dir)
    return demo.load_demo(root, "val")


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_ray_cache_equals_in_process_cache(ray_executor, val_set, tmp_path):
    from detsearch.detection.cache import read_cache
    from detsearch.models.record import record_cache, record_cache_sharded
    from detsearch.models.restore import load_detector

    detector, checkpoint = load_detector(RUN)
    source = {"dataset": "demo val"}
    local = record_cache(detector, val_set, tmp_path / "local", score_floor=FLOOR, batch_size=2,
                         images_per_shard=2, source=source)
    done = []
    on_ray = record_cache_sharded(RUN, val_set, tmp_path / "ray", score_floor=FLOOR, executor=ray_executor,
                                  batch_size=2, images_per_shard=2, source=source, progress=done.append)
    assert sorted(done) == [1, 2, 2]
    assert local.num_entries() > 0
    for name, array in local.arrays().items():
        np.testing.assert_array_equal(on_ray.arrays()[name], array, err_msg=name)
    assert files(tmp_path / "ray") == files(tmp_path / "local")

    # Resume: a committed shard is kept, the others are recorded again, the result is the same.
    shutil.rmtree(tmp_path / "ray")
    (tmp_path / "ray" / "shards").mkdir(parents=True)
    shutil.copytree(tmp_path / "local" / "shards" / "00001", tmp_path / "ray" / "shards" / "00001")
    record_cache_sharded(RUN, val_set, tmp_path / "ray", score_floor=FLOOR, executor=ray_executor,
                         checkpoint=checkpoint, batch_size=2, images_per_shard=2, source=source)
    assert files(tmp_path / "ray") == files(tmp_path / "local")
    assert read_cache(tmp_path / "ray").meta.image_ids == local.meta.image_ids

    # Other settings on a committed shard are refused, from the worker, with record_cache's message.
    with pytest.raises(ValueError, match="recorded with other settings"):
        record_cache_sharded(RUN, val_set, tmp_path / "ray", score_floor=0.1, executor=ray_executor,
                             batch_size=2, images_per_shard=2, source=source)


def test_cache_det_tool_with_the_ray_executor(ray_executor, val_set, tmp_path, capsys):
    import importlib.util
    import json

    from detsearch.detection.cache import read_cache

    spec = importlib.util.spec_from_file_location("cache_det_tool", RUN.parents[2] / "tools" / "cache_det.py")
    cache_det = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache_det)
    root = val_set.image_dir.parent
    common_arguments = ["--run", str(RUN), "--dataset", "demo", "--data_dir", str(root), "--split", "val",
                        "--images_per_shard", "2", "--batch_size", "2", "--score_floor", str(FLOOR)]
    assert cache_det.main(common_arguments + ["--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["kind"], summary["images"]) == ("one_stage", 5)
    assert cache_det.main(common_arguments + ["--out", str(tmp_path / "local")]) == 0
    assert files(tmp_path / "ray") == files(tmp_path / "local")
    assert read_cache(tmp_path / "ray").meta.source["checkpoint"].endswith("ckpt-1500")
