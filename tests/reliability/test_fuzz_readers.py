"""Property-based fuzzing of the readers: whatever the input, a reader returns a valid result or
raises its own error class with a message that names the source; never another exception.

tests/detection/test_cache.py already damages random bytes of a cache (which its checksums
catch). Here the damage is re-signed the way the writer signs, so it gets past the checksums
and reaches the parser and the validation behind them; and the annotation readers (COCO for the
sweep, COCO and VOC for training, COCO results for the importer) get structured damage: values
of any JSON type at any place, keys removed, elements duplicated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from detsearch.detection.cache.arrays import yxyx_of_xywh
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detsearch.datasets.coco import load_coco
from detsearch.datasets.detection import DatasetError
from detsearch.datasets.voc import load_voc
from detsearch.detection import cache as cache_module
from detsearch.detection.cache import meta as cache_meta
from detsearch.detection.cache import CacheError, import_coco_detections, read_cache
from detsearch.detection.cocoeval import load_ground_truth

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
GOOD_ANNOTATIONS = json.loads((BAD / "good" / "annotations.json").read_text())
GOOD_DETECTIONS = json.loads((BAD / "good" / "detections.json").read_text())
GOOD_VOC = (BAD / "good" / "voc.xml").read_text()
GOOD_CACHE = BAD / "good" / "cache"

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Values that break naive readers: NaN, infinities, -0.0, integers beyond int64 and beyond
# float64, wrong types, empty containers.
NASTY = [math.nan, math.inf, -math.inf, -0.0, 2**63, -(2**63) - 1, 10**30, 10**400, -(10**400), 1e39, -1, 0,
         True, None, "", "1", [], {}, [1, 2, 3, 4, 5]]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 12) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def paths(value, prefix=()):
    """Every place inside a JSON document, as key/index tuples (the root is ``()``)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, prefix + (index,))


def mutate(data, document, rounds=st.integers(1, 3)):
    """Draws 1-3 edits of a copy of ``document``: replace a value (half the time with one of
    `NASTY`), delete a key or element, duplicate an element, or copy in the value of another
    place. Places are chosen uniformly (through a drawn `random.Random`: Hypothesis's own choices
    lean to the first items, which would leave most places untouched)."""
    document = json.loads(json.dumps(document))
    chooser = data.draw(st.randoms(use_true_random=False))
    for _ in range(data.draw(rounds)):
        places = sorted(paths(document), key=repr)
        place = chooser.choice(places)
        action = chooser.choice(["replace", "replace", "delete", "duplicate", "transplant"])
        if action == "replace":
            value = chooser.choice(NASTY) if chooser.random() < 0.5 else data.draw(JSON_VALUES)
            value = json.loads(json.dumps(value))
        if not place:
            if action == "replace":
                document = value
            continue
        parent = document
        for key in place[:-1]:
            parent = parent[key]
        last = place[-1]
        if action == "replace":
            parent[last] = value
        elif action == "delete":
            del parent[last]
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(last, json.loads(json.dumps(parent[last])))
        elif action == "transplant":
            donor = document
            for key in chooser.choice(places):
                donor = donor[key]
            parent[last] = json.loads(json.dumps(donor))
    return document


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document))  # NaN and Infinity become the usual non-standard literals
    return path


# --------------------------------------------------------------------------------------------
# the cache reader, past its checksums


def sign(document: dict) -> dict:
    """Sets ``meta_sha256`` as the writer does; a document the writer could never produce (NaN)
    is signed with the non-standard literals, so the reader has to refuse it on its own."""
    document = dict(document)
    document.pop("meta_sha256", None)
    try:
        canonical = cache_meta.canonical_json(document)
    except (ValueError, TypeError, RecursionError):
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=True, default=repr).encode()
    document["meta_sha256"] = hashlib.sha256(canonical).hexdigest()
    return document


def read_or_cache_error(path: Path, verify: bool = True) -> str:
    try:
        cache = read_cache(path, verify=verify)
    except CacheError as error:
        assert str(path) in str(error), str(error)
        return "error"
    cache.validate()  # whatever is read back is a valid cache
    return "ok"


def check_signed_meta(data, scratch_root: Path) -> str:
    meta = json.loads((GOOD_CACHE / "meta.json").read_text())
    damaged = {k: v for k, v in meta.items() if k != "meta_sha256"}
    if data.draw(st.integers(0, 3)) == 0:  # free-form provenance: any JSON goes (the controls)
        damaged["source"] = mutate(data, damaged["source"])
    else:
        damaged = mutate(data, damaged)
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
        path = Path(scratch) / "cache"
        shutil.copytree(GOOD_CACHE, path)
        payload = sign(damaged) if isinstance(damaged, dict) else damaged
        (path / "meta.json").write_text(json.dumps(payload, default=repr))
        return read_or_cache_error(path)


ARRAY_VALUES = {
    "f": st.floats(allow_nan=True, allow_infinity=True, width=32) | st.sampled_from([-1.0, 0.0, 0.5, 1.0, 29.0]),
    "i": st.integers(-(2**31), 2**31 - 1) | st.integers(-2, 6),
}
ARRAYS = sorted(n for n in cache_module.ARRAY_NAMES if (GOOD_CACHE / f"{n}.npy").exists())


def check_signed_array(data, scratch_root: Path) -> str:
    chooser = data.draw(st.randoms(use_true_random=False))
    name = chooser.choice(ARRAYS)
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
        path = Path(scratch) / "cache"
        shutil.copytree(GOOD_CACHE, path)
        array = np.load(path / f"{name}.npy")
        keep = data.draw(st.booleans())  # half the time only some values change
        length = array.shape[0] if keep else data.draw(st.integers(0, array.shape[0] + 2))
        shape = (length, *array.shape[1:])
        if keep:
            new = array.copy().reshape(-1)
            for _ in range(data.draw(st.integers(1, 2))):
                new[chooser.randrange(new.size)] = data.draw(ARRAY_VALUES[array.dtype.kind])
        else:
            size = int(np.prod(shape))
            new = np.array(data.draw(st.lists(ARRAY_VALUES[array.dtype.kind], min_size=size, max_size=size)), dtype=array.dtype)
        meta = json.loads((path / "meta.json").read_text())

        def save(array_name, value):
            np.save(path / f"{array_name}.npy", value)
            raw = (path / f"{array_name}.npy").read_bytes()
            meta["arrays"][array_name]["shape"] = list(value.shape)
            meta["arrays"][array_name]["sha256"] = hashlib.sha256(raw[10 + int.from_bytes(raw[8:10], "little"):]).hexdigest()

        save(name, new.reshape(shape))
        # row_boxes is the float32 yxyx of row_xywh: keep the pair consistent, so that a
        # change can still give a valid cache.
        if name == "row_xywh" and new.size % 4 == 0:
            save("row_boxes", yxyx_of_xywh(new.reshape(shape)))
        elif name == "row_boxes" and "row_xywh" in meta["arrays"]:
            del meta["arrays"]["row_xywh"]
            os.remove(path / "row_xywh.npy")
        (path / "meta.json").write_text(json.dumps(sign(meta)))
        return read_or_cache_error(path, verify=data.draw(st.booleans()))


# --------------------------------------------------------------------------------------------
# annotation readers


def message_names(error: Exception, source: str) -> None:
    assert str(error).startswith(f"{source}: "), str(error)


def check_ground_truth(data, scratch_root: Path) -> str:
    """`cocoeval.load_ground_truth` (what ``python -m detsearch sweep --annotations`` reads):
    a GroundTruth, or a ValueError naming the file."""
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
        path = write_json(Path(scratch) / "gt.json", mutate(data, GOOD_ANNOTATIONS))
        try:
            ground_truth = load_ground_truth(path)
        except ValueError as error:
            assert type(error) is ValueError
            message_names(error, str(path))
            return "error"
    assert len(ground_truth.image_ids) == len(set(ground_truth.image_ids.tolist()))
    assert np.isfinite(ground_truth.boxes).all() and (ground_truth.boxes[:, 2:] >= 0).all()
    return "ok"


def check_results_importer(data, scratch_root: Path) -> str:
    """`import_coco_detections` as ``--detections`` uses it (a file, and the annotations the
    CLI has already loaded as a JSON object): a valid cache, or a CacheError naming the file
    (or the annotations, when those are what is wrong)."""
    annotations = mutate(data, GOOD_ANNOTATIONS, rounds=st.integers(0, 1))
    if not isinstance(annotations, dict):
        annotations = GOOD_ANNOTATIONS
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
        path = write_json(Path(scratch) / "raw.json", mutate(data, GOOD_DETECTIONS))
        try:
            cache = import_coco_detections(str(path), annotations)
        except CacheError as error:
            assert str(error).startswith((f"{path}: ", "<annotations>: ")), str(error)
            return "error"
    cache.validate()
    assert np.isfinite(np.asarray(cache.row_boxes)).all()
    return "ok"


def check_coco_dataset(data, scratch_root: Path) -> str:
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
        path = write_json(Path(scratch) / "instances.json", mutate(data, GOOD_ANNOTATIONS))
        try:
            dataset = load_coco(path, path.parent, check_images=False)
        except DatasetError as error:
            message_names(error, str(path))
            return "error"
    for example in dataset.examples:
        assert np.isfinite(example.boxes).all()
        assert (example.boxes[:, 2] > example.boxes[:, 0]).all() and (example.boxes[:, 3] > example.boxes[:, 1]).all()
    return "ok"


VOC_HARMLESS = {"name": "bird", "difficult": "1", "depth": "1", "filename": "z.png", "xmin": "52", "ymax": "24"}
VOC_FIELDS = ["filename", "width", "height", "depth", "name", "difficult", "xmin", "ymin", "xmax", "ymax"]
VOC_TEXT = ["", " ", "0", "1", "-3", "1e400", "nan", "inf", "12.5", "cat", "a\nb", "<", "&", "]]>", "<x/>"]


def check_voc(data, scratch_root: Path) -> str:
    """`load_voc`: element texts replaced (escaped or raw, so also malformed XML), elements
    dropped, bytes cut: a dataset, or a DatasetError naming the file."""
    text = GOOD_VOC
    chooser = data.draw(st.randoms(use_true_random=False))
    for _ in range(data.draw(st.integers(1, 3))):
        field = chooser.choice(VOC_FIELDS)
        action = chooser.choice(["text", "raw", "drop", "harmless", "harmless"])
        start = text.find(f"<{field}>")
        stop = text.find(f"</{field}>", start)
        value = chooser.choice(VOC_TEXT) if chooser.random() < 0.7 else data.draw(st.text(max_size=6))
        if start < 0 or stop < 0:
            continue
        if action == "harmless":
            text = text[: start + len(field) + 2] + VOC_HARMLESS.get(field, text[start + len(field) + 2:stop]) + text[stop:]
        elif action == "text":
            value = value.replace("&", "&amp;").replace("<", "&lt;")
            text = text[: start + len(field) + 2] + value + text[stop:]
        elif action == "raw":
            text = text[: start + len(field) + 2] + value + text[stop:]
        else:
            text = text[:start] + text[stop + len(field) + 3:]
    if chooser.random() < 0.1:
        text = text[: chooser.randrange(len(text) + 1)]
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
        path = Path(scratch) / "image.xml"
        path.write_text(text, encoding="utf-8")
        try:
            dataset = load_voc(path, check_images=False)
        except DatasetError as error:
            message_names(error, str(path))
            return "error"
    example = dataset.examples[0]
    assert np.isfinite(example.boxes).all() and (example.boxes[:, 2:] > example.boxes[:, :2]).all()
    return "ok"


CHECKS = {
    "signed_meta": check_signed_meta,
    "signed_array": check_signed_array,
    "ground_truth": check_ground_truth,
    "results_importer": check_results_importer,
    "coco_dataset": check_coco_dataset,
    "voc": check_voc,
}


@pytest.mark.parametrize("reader", sorted(CHECKS))
def test_reader_gives_a_valid_result_or_its_own_error_naming_the_source(reader, tmp_path):
    outcomes = {"error": 0, "ok": 0}

    @FUZZ
    @given(data=st.data())
    def fuzz(data):
        outcomes[CHECKS[reader](data, tmp_path)] += 1

    fuzz()
    # A mutation strategy that only ever produced errors (or only valid inputs) would test little.
    assert outcomes["error"] >= 5 and outcomes["ok"] >= 5, outcomes
