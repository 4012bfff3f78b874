"""Tests of the on-disk detection cache: round trips, validation, atomicity, corruption,
shards, importers, and a fuzzed reader."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detsearch.detection import cache as cache_module
from detsearch.detection.cache import (
    CACHE_VERSION,
    CacheBuilder,
    CacheError,
    CacheMeta,
    CacheWriter,
    DetectionCache,
    ShardSpec,
    completed_shards,
    import_coco_detections,
    import_two_stage_json,
    import_two_stage_npz,
    merge_shards,
    plan_shards,
    read_cache,
    write_cache,
)

REPO = Path(__file__).resolve().parents[2]
COCO_100 = [REPO / "tests" / "data" / "coco_val2014_100", REPO.parent / "shared" / "data" / "coco_val2014_100"]


# --------------------------------------------------------------------------------------------
# Helpers


def random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    corner = rng.uniform(0, 200, (count, 2))
    return np.concatenate([corner, corner + rng.uniform(0, 50, (count, 2))], axis=1)


def add_random_images(target, rng, kind, num_images, num_categories=4, floor=0.1, level=False, first_id=1):
    for i in range(num_images):
        num_rows = int(rng.integers(0, 6))
        pairs = [(r, c) for r in range(num_rows) for c in range(num_categories) if rng.random() < 0.4]
        rng.shuffle(pairs)
        entry_row = np.array([p[0] for p in pairs], dtype=np.int64)
        entry_class = np.array([p[1] for p in pairs], dtype=np.int64)
        extra = {}
        if kind == "two_stage":
            extra = dict(
                entry_boxes=random_boxes(rng, len(pairs)),
                row_objectness=rng.uniform(0, 1, num_rows),
                row_level=rng.integers(2, 7, num_rows) if level else None,
            )
        target.add_image(
            first_id + 3 * i,
            (int(rng.integers(50, 300)), int(rng.integers(50, 300))),
            random_boxes(rng, num_rows),
            entry_row,
            entry_class,
            rng.uniform(floor, 1, len(pairs)),
            **extra,
        )


def meta_kwargs(kind, num_categories=4, floor=0.1):
    return dict(
        kind=kind,
        category_ids=[10 + 3 * c for c in range(num_categories)],
        category_names=[f"class{c}" for c in range(num_categories)],
        score_floor=floor,
        num_proposals=300 if kind == "two_stage" else None,
        source={"model": "test", "preset": kind},
    )


def make_cache(kind="one_stage", num_images=6, seed=0, level=True) -> DetectionCache:
    builder = CacheBuilder(**meta_kwargs(kind))
    add_random_images(builder, np.random.default_rng(seed), kind, num_images, level=level)
    return builder.build()


def assert_same(a: DetectionCache, b: DetectionCache) -> None:
    assert a.meta == b.meta
    assert a.meta.source == b.meta.source
    assert list(a.arrays()) == list(b.arrays())
    for name, array in a.arrays().items():
        other = getattr(b, name)
        assert array.dtype == other.dtype, name
        np.testing.assert_array_equal(array, other, err_msg=name)


def arrays_of(cache: DetectionCache) -> dict:
    return {name: np.array(array) for name, array in cache.arrays().items()}


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("kind", ["one_stage", "two_stage"])
def test_write_read_round_trip_is_equal_and_memory_mapped(tmp_path, kind):
    cache = make_cache(kind)
    assert cache.num_entries() > 0
    write_cache(tmp_path / "c", cache)
    back = read_cache(tmp_path / "c")
    assert_same(cache, back)
    for array in back.arrays().values():
        assert isinstance(array, np.memmap)
        assert not array.flags.writeable
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_streaming_writer_matches_in_memory_builder(tmp_path):
    kwargs = meta_kwargs("two_stage")
    builder = CacheBuilder(**kwargs)
    add_random_images(builder, np.random.default_rng(3), "two_stage", 9, level=True)
    with CacheWriter(tmp_path / "c", **kwargs) as writer:
        add_random_images(writer, np.random.default_rng(3), "two_stage", 9, level=True)
        assert not (tmp_path / "c").exists()  # nothing at the target before the commit
    assert_same(builder.build(), read_cache(tmp_path / "c"))


def test_writer_sorts_entries_and_makes_rows_global():
    builder = CacheBuilder(kind="one_stage", category_ids=[1, 2, 3], score_floor=0.0)
    boxes = [[0, 0, 1, 1], [1, 1, 2, 2]]
    builder.add_image(7, (10, 10), boxes, [1, 0, 1], [0, 2, 1], [0.3, 0.2, 0.1])
    builder.add_image(5, (10, 20), np.zeros((0, 4)), [], [], [])
    builder.add_image(9, (10, 10), boxes, [1, 0], [2, 2], [0.5, 0.6])
    cache = builder.build()
    assert cache.meta.image_ids == (7, 5, 9)
    assert cache.meta.image_sizes == ((10, 10), (10, 20), (10, 10))
    np.testing.assert_array_equal(cache.row_offsets, [0, 2, 2, 4])
    np.testing.assert_array_equal(cache.entry_offsets, [0, 3, 3, 5])
    np.testing.assert_array_equal(cache.entry_row, [0, 1, 1, 2, 3])
    np.testing.assert_array_equal(cache.entry_class, [2, 0, 1, 2, 2])
    np.testing.assert_array_equal(cache.entry_score, np.float32([0.2, 0.3, 0.1, 0.6, 0.5]))
    assert cache.image_rows(2) == slice(2, 4) and cache.image_entries(1) == slice(3, 3)
    assert cache.entry_boxes is None and cache.row_objectness is None and cache.row_level is None


def test_empty_cache_round_trip(tmp_path):
    builder = CacheBuilder(kind="two_stage", category_ids=[1], score_floor=0.5)
    builder.add_image(1, (4, 4), np.zeros((0, 4)), [], [], [], entry_boxes=np.zeros((0, 4)), row_objectness=[])
    for cache in (builder.build(), CacheBuilder(kind="one_stage", category_ids=[], score_floor=0).build()):
        write_cache(tmp_path / "c", cache)
        assert_same(cache, read_cache(tmp_path / "c"))


def test_from_arrays_keeps_callers_arrays_untouched_and_writable():
    cache = make_cache("two_stage")
    arrays = arrays_of(cache)
    arrays["row_boxes"] = arrays["row_boxes"].astype(np.float64)  # converted back to float32
    before = {name: array.copy() for name, array in arrays.items()}
    rebuilt = DetectionCache.from_arrays(cache.meta, **arrays)
    assert_same(cache, rebuilt)
    for name, array in arrays.items():
        assert array.flags.writeable
        np.testing.assert_array_equal(array, before[name])
    assert not rebuilt.row_boxes.flags.writeable


def test_meta_is_normalised_and_json_copied():
    source = {"model": "ssd", "steps": (1, 2)}
    meta = CacheMeta(1, "one_stage", np.array([3, 1]), [[2, 3], (4, 5)], [1], np.float32(0.25), source=source)
    assert meta.image_ids == (3, 1) and type(meta.image_ids[0]) is int
    assert meta.image_sizes == ((2, 3), (4, 5))
    assert meta.kind == "one_stage" and meta.score_floor == 0.25
    assert meta.source == {"model": "ssd", "steps": [1, 2]}
    assert source["steps"] == (1, 2)
    hash(meta)


# --------------------------------------------------------------------------------------------
# Validation


def small_arrays(kind="two_stage"):
    meta = CacheMeta(
        CACHE_VERSION, kind, (1, 2), ((10, 10), (10, 10)), (5, 6, 7), 0.1,
        top_k=3, num_proposals=5 if kind == "two_stage" else None,
    )
    arrays = dict(
        row_offsets=np.array([0, 2, 3]),
        row_boxes=np.array([[0, 0, 1, 1], [0, 0, 2, 2], [1, 1, 3, 3]], dtype=np.float32),
        entry_offsets=np.array([0, 3, 4]),
        entry_row=np.array([0, 0, 1, 2]),
        entry_class=np.array([0, 2, 1, 1]),
        entry_score=np.array([0.5, 0.1, 1.0, 0.2], dtype=np.float32),
    )
    if kind == "two_stage":
        arrays.update(
            row_objectness=np.array([0.9, 0.0, 1.0], dtype=np.float32),
            row_level=np.array([2, 3, 4]),
            entry_boxes=np.array([[0, 0, 1, 1]] * 4, dtype=np.float32),
        )
    return meta, arrays


def test_small_arrays_are_valid():
    for kind in ("one_stage", "two_stage"):
        meta, arrays = small_arrays(kind)
        DetectionCache.from_arrays(meta, **arrays)


def _set(name, index, value):
    def mutate(arrays):
        arrays[name] = arrays[name].copy()
        arrays[name][index] = value
    return mutate


def _replace(name, value):
    def mutate(arrays):
        arrays[name] = value
    return mutate


VALIDATION_CASES = [
    ("row_offsets_start", _set("row_offsets", 0, 1), "row_offsets[0] = 1, expected 0"),
    ("row_offsets_decrease", _set("row_offsets", 1, 4), "row_offsets[2] = 3 is less than row_offsets[1] = 4"),
    ("row_offsets_end", _replace("row_offsets", np.array([0, 2, 2])), "row_offsets[-1] = 2, but row_boxes has 3"),
    ("entry_offsets_end", _replace("entry_offsets", np.array([0, 3, 5])), "entry_offsets[-1] = 5"),
    ("entry_row_other_image", _set("entry_row", 2, 2), "entries must be sorted"),
    ("entry_row_before_image", _replace("entry_offsets", np.array([0, 2, 4])), "entry_row[2] = 1 is outside the rows of image 1 (id 2): [2, 3)"),
    ("entry_row_after_image", _replace("entry_offsets", np.array([0, 4, 4])), "entry_row[3] = 2 is outside the rows of image 0 (id 1): [0, 2)"),
    ("class_range", _set("entry_class", 3, 3), "entry_class[3] = 3 is outside [0, 3)"),
    ("class_negative", _set("entry_class", 0, -1), "entry_class[0] = -1 is outside"),
    ("unsorted", _replace("entry_class", np.array([2, 0, 1, 1])), "entry 1 (row 0, class 0) follows entry 0 (row 0, class 2)"),
    ("repeated_pair", _replace("entry_class", np.array([0, 0, 1, 1])), "no pair repeated"),
    ("score_floor", _set("entry_score", 1, 0.09), "entry_score[1] = 0.09"),
    ("score_above_one", _set("entry_score", 2, 1.01), "is above 1"),
    ("score_nan", _set("entry_score", 3, np.nan), "entry_score[3] = nan is not finite"),
    ("box_order_y", _set("row_boxes", (1, 2), -1.0), "row_boxes[1] = [0.0, 0.0, -1.0, 2.0] (ymin, xmin, ymax, xmax) has ymin > ymax"),
    ("box_order_x", _set("row_boxes", (2, 3), 0.5), "has xmin > xmax"),
    ("box_inf", _set("row_boxes", (0, 0), -np.inf), "row_boxes[0] = [-inf"),
    ("entry_box_nan", _set("entry_boxes", (3, 1), np.nan), "entry_boxes[3]"),
    ("objectness_range", _set("row_objectness", 1, -0.5), "row_objectness[1] = -0.5 is below 0"),
    ("level_negative", _set("row_level", 2, -1), "row_level[2] = -1 is negative"),
    ("missing_objectness", _replace("row_objectness", None), "row_objectness is required in a two_stage cache"),
    ("missing_entry_boxes", _replace("entry_boxes", None), "entry_boxes is required"),
    ("box_shape", _replace("row_boxes", np.zeros((3, 5))), "row_boxes has shape (3, 5), expected [R, 4]"),
    ("entry_length", _replace("entry_class", np.array([0, 2, 1])), "entry_class has 3 elements, expected 4"),
    ("float_class", _replace("entry_class", np.array([0.0, 2.0, 1.0, 1.0])), "entry_class must hold integers"),
    ("class_overflow", _replace("entry_class", np.array([0, 2, 1, 2**40])), "does not fit in int32"),
]


@pytest.mark.parametrize("mutate, message", [c[1:] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES])
def test_validation_names_the_first_violation(mutate, message):
    meta, arrays = small_arrays("two_stage")
    mutate(arrays)
    with pytest.raises(CacheError) as error:
        DetectionCache.from_arrays(meta, **arrays)
    assert message in str(error.value)


def test_top_k_counts_rows_per_image():
    meta, arrays = small_arrays("one_stage")
    with pytest.raises(CacheError, match=r"image 0 \(id 1\) has 2 rows, more than meta.top_k = 1"):
        DetectionCache.from_arrays(CacheMeta(**{**meta.__dict__, "top_k": 1}), **arrays)


def test_one_stage_refuses_two_stage_arrays():
    meta, arrays = small_arrays("one_stage")
    arrays["entry_boxes"] = np.zeros((4, 4), np.float32)
    with pytest.raises(CacheError, match="entry_boxes must be None in a one_stage cache"):
        DetectionCache.from_arrays(meta, **arrays)


def test_construction_checks_exact_dtypes_of_a_directly_built_cache():
    meta, arrays = small_arrays("one_stage")
    arrays = arrays_of(DetectionCache.from_arrays(meta, **arrays))
    arrays["entry_score"] = arrays["entry_score"].astype(">f4")
    with pytest.raises(CacheError, match="DetectionCache: entry_score has dtype >f4, expected <f4"):
        DetectionCache(meta=meta, **{name: arrays.get(name) for name in cache_module.ARRAY_NAMES})


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(version=3), "meta.version 3 is not supported"),
        (dict(kind="three_stage"), "meta.kind must be"),
        (dict(image_ids=(1, 1)), r"meta.image_ids\[1\] = 1 repeats meta.image_ids\[0\]"),
        (dict(image_sizes=((10, 0), (1, 1))), r"height and width must be >= 1"),
        (dict(image_sizes=((10, 10),)), "1 sizes for 2"),
        (dict(category_ids=(5, 5, 7)), "repeats"),
        (dict(score_floor=1.5), "score_floor must be in"),
        (dict(score_floor=math.nan), "score_floor must be in"),
        (dict(top_k=0), "top_k must be >= 1"),
        (dict(image_ids=(1, True)), "must be an integer"),
        (dict(box_format="xywh"), "box_format must be 'yxyx'"),
        (dict(category_names=("a",)), "1 names for 3"),
        (dict(source={"x": object()}), "JSON-serialisable"),
    ],
)
def test_meta_checks(change, message):
    meta, _ = small_arrays("one_stage")
    with pytest.raises(CacheError, match=message):
        CacheMeta(**{**meta.__dict__, **change})


def test_one_stage_meta_refuses_num_proposals():
    with pytest.raises(CacheError, match="num_proposals must be None for a one_stage"):
        CacheMeta(1, "one_stage", (), (), (), 0.0, num_proposals=10)


def test_score_floor_is_compared_in_float32():
    builder = CacheBuilder(kind="one_stage", category_ids=[1], score_floor=0.7)
    at_floor = np.float32(0.7)  # 0.69999998807... < 0.7 in float64
    builder.add_image(1, (5, 5), [[0, 0, 1, 1]], [0], [0], [at_floor])
    assert builder.build().entry_score[0] == at_floor
    below = np.nextafter(at_floor, np.float32(0))
    with pytest.raises(CacheError, match="is below score_floor 0.7"):
        builder.add_image(2, (5, 5), [[0, 0, 1, 1]], [0], [0], [below])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda b: b.add_image(1, (5, 5), [[0, 0, 1, 1]], [0], [0], [0.5]), "image_id 1 was already added"),
        (lambda b: b.add_image(2, (5, 5), [[0, 0, 1, 1]], [1], [0], [0.5]), r"image_id 2: entry_row\[0\] = 1 is outside \[0, 1\)"),
        (lambda b: b.add_image(2, (5, 5), [[0, 0, 1, 1]] * 2, [1, 0, 1], [0, 0, 0], [0.5] * 3), "entries 0 and 2 repeat the pair"),
        (lambda b: b.add_image(2, (5, 5), [[0, 0, 1, 1]], [0], [0], [0.5], entry_boxes=[[0, 0, 1, 1]]), "entry_boxes must be None"),
        (lambda b: b.add_image(2, (5, 0), [[0, 0, 1, 1]], [0], [0], [0.5]), "image_id 2: size"),
        (lambda b: b.add_image(2, (5, 5), [[0, 0, 1, 1]], [0, 0], [0], [0.5]), "entry_class has 1 elements but entry_row has 2"),
        (lambda b: b.add_image(2, (5, 5), [[0, 0, 1, 1]], [0], [0], ["x"]), "entry_score must hold real numbers"),
        (lambda b: b.add_image(2.5, (5, 5), [[0, 0, 1, 1]], [0], [0], [0.5]), "image_id must be an integer"),
    ],
)
def test_add_image_errors_leave_builder_usable(call, message):
    builder = CacheBuilder(kind="one_stage", category_ids=[1, 2], score_floor=0.1)
    builder.add_image(1, (5, 5), [[0, 0, 1, 1]], [0], [0], [0.5])
    with pytest.raises(CacheError, match=message):
        call(builder)
    builder.add_image(3, (5, 5), [[0, 0, 1, 1]], [0], [1], [0.5])
    assert builder.build().meta.image_ids == (1, 3)


def test_row_level_must_be_given_for_all_images_or_none():
    builder = CacheBuilder(kind="two_stage", category_ids=[1], score_floor=0.0)
    builder.add_image(1, (5, 5), [[0, 0, 1, 1]], [], [], [], entry_boxes=np.zeros((0, 4)), row_objectness=[0.5], row_level=[2])
    with pytest.raises(CacheError, match="row_level must be given for all images or none"):
        builder.add_image(2, (5, 5), [[0, 0, 1, 1]], [], [], [], entry_boxes=np.zeros((0, 4)), row_objectness=[0.5])


# --------------------------------------------------------------------------------------------
# Atomicity


def test_replacing_a_cache_leaves_no_temporaries(tmp_path):
    a, b = make_cache(seed=1), make_cache(seed=2)
    write_cache(tmp_path / "c", a)
    write_cache(tmp_path / "c", b)
    assert_same(b, read_cache(tmp_path / "c"))
    assert sorted(os.listdir(tmp_path)) == ["c"]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftover_temporary_is_never_read_and_is_cleaned_by_the_next_write(tmp_path):
    cache = make_cache()
    write_cache(tmp_path / "elsewhere", cache)
    stale = tmp_path / f"c.tmp-{dead_pid()}"
    shutil.copytree(tmp_path / "elsewhere", stale)  # complete, even with meta.json: still not the cache
    live = tmp_path / f"c.tmp-{os.getppid()}"
    live.mkdir()
    with pytest.raises(CacheError, match=r"no cache here \(c\.tmp-\d+ is an unfinished write\)"):
        read_cache(tmp_path / "c")
    with pytest.raises(CacheError, match="temporary directory"):
        read_cache(stale)
    write_cache(tmp_path / "c", make_cache(seed=5))
    assert not stale.exists()
    assert live.exists()  # its writer may still be running


def test_writer_leaves_no_trace_when_aborted(tmp_path):
    write_cache(tmp_path / "c", make_cache(seed=1))
    with pytest.raises(RuntimeError):
        with CacheWriter(tmp_path / "c", **meta_kwargs("one_stage")) as writer:
            add_random_images(writer, np.random.default_rng(0), "one_stage", 3)
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["c"]
    assert_same(make_cache(seed=1), read_cache(tmp_path / "c"))


def test_refuses_to_replace_a_directory_that_is_not_a_cache(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match="is not a detection cache"):
        write_cache(tmp_path / "c", make_cache())
    with pytest.raises(CacheError, match="is not a detection cache"):
        CacheWriter(tmp_path / "c", **meta_kwargs("one_stage"))
    assert os.listdir(tmp_path / "c") == ["notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["c"]


CRASH_AT_RENAME = """
    import os, sys
    import numpy as np
    from detsearch.detection.cache import CacheBuilder, write_cache
    crash_at = int(sys.argv[1]) if len(sys.argv) > 1 else int({crash_at})
    calls = [0]
    real_replace = os.replace
    def replace(src, dst):
        calls[0] += 1
        if calls[0] == crash_at:
            os._exit(9)
        return real_replace(src, dst)
    os.replace = replace
    builder = CacheBuilder(kind="one_stage", category_ids=[1], score_floor=0.0)
    builder.add_image(99, (5, 5), [[0, 0, 1, 1]], [0], [0], [0.25])
    write_cache({path!r}, builder.build())
"""


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_crash_at_each_rename_leaves_previous_cache_or_none(tmp_path, crash_at):
    # Renames of a replace: 1 tmp->target (fails: target not empty), 2 target->old, 3 tmp->target.
    previous = make_cache(seed=1)
    write_cache(tmp_path / "c", previous)
    result = run_python(CRASH_AT_RENAME.format(crash_at=crash_at, path=str(tmp_path / "c")))
    assert result.returncode == 9, result.stderr
    if crash_at < 3:
        assert_same(previous, read_cache(tmp_path / "c"))
    else:
        with pytest.raises(CacheError, match=r"no cache here \(c\.old-\d+ is a previous cache"):
            read_cache(tmp_path / "c")
    write_cache(tmp_path / "c", previous)
    assert sorted(os.listdir(tmp_path)) == ["c"]  # the dead writer's directories are gone


KILL_LOOP = """
    import sys
    import numpy as np
    from detsearch.detection.cache import CacheBuilder, write_cache
    builder = CacheBuilder(kind="one_stage", category_ids=list(range(1, 21)), score_floor=0.0)
    rng = np.random.default_rng(7)
    boxes = np.array([[0, 0, 10, 10]] * 400, dtype=np.float32)
    rows = np.repeat(np.arange(400), 4)
    classes = np.tile(np.arange(4), 400)
    for i in range(300):
        builder.add_image(i, (20, 20), boxes, rows, classes, rng.uniform(0, 1, 1600))
    cache = builder.build()
    print("ready", flush=True)
    while True:
        write_cache({path!r}, cache)
"""


def test_sigkill_during_writes_leaves_a_complete_cache_or_none(tmp_path):
    path = tmp_path / "c"
    previous = make_cache(seed=1)
    write_cache(path, previous)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for delay in (0.0, 0.05, 0.13, 0.29, 0.41):
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(KILL_LOOP.format(path=str(path)))],
            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        try:
            cache = read_cache(path)
        except CacheError as error:
            assert ".old-" in str(error)  # killed between the two renames of a replace
            continue
        if cache.meta.image_ids == previous.meta.image_ids:
            assert_same(previous, cache)
        else:
            assert cache.num_images() == 300 and cache.num_entries() == 300 * 1600
    write_cache(path, previous)
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_reader_never_sees_a_mix_while_a_writer_replaces(tmp_path):
    path = tmp_path / "c"
    a, b = make_cache(seed=1, num_images=40), make_cache(seed=2, num_images=40)
    write_cache(path, a)
    stop = threading.Event()

    def rewrite():
        while not stop.is_set():
            write_cache(path, b)
            write_cache(path, a)

    thread = threading.Thread(target=rewrite)
    thread.start()
    try:
        reads = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                cache = read_cache(path)
            except CacheError as error:
                assert "no cache here" in str(error) or "kept changing" in str(error)
                continue
            assert_same(a if cache.meta == a.meta else b, cache)
            reads += 1
        assert reads > 0
    finally:
        stop.set()
        thread.join()


def test_a_replace_right_after_the_reader_opened_the_directory_is_read_again(tmp_path, monkeypatch):
    # The reader holds the old directory, which the replace moves aside and deletes before the
    # reader opens meta.json: it must read the new cache, not call the old one "not a cache".
    from detsearch.detection.cache import reader

    path = tmp_path / "c"
    a, b = make_cache(seed=1, num_images=4), make_cache(seed=2, num_images=4)
    write_cache(path, a)
    opened = reader._Directory.__init__
    replaced = []

    def open_then_replace(self, where):
        opened(self, where)
        if not replaced:
            replaced.append(True)
            write_cache(path, b)

    monkeypatch.setattr(reader._Directory, "__init__", open_then_replace)
    assert_same(b, read_cache(path))
    assert replaced


# --------------------------------------------------------------------------------------------
# Corruption


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "c"
    write_cache(path, make_cache("two_stage"))
    return path


def test_truncated_array_is_reported(written):
    file = written / "entry_score.npy"
    file.write_bytes(file.read_bytes()[:-3])
    for verify in (True, False):
        with pytest.raises(CacheError, match=r"entry_score\.npy: file is truncated"):
            read_cache(written, verify=verify)


def test_truncated_header_is_reported(written):
    file = written / "row_boxes.npy"
    file.write_bytes(file.read_bytes()[:40])
    with pytest.raises(CacheError, match=r"row_boxes\.npy: truncated \.npy header"):
        read_cache(written)


def test_trailing_bytes_are_reported(written):
    with open(written / "row_level.npy", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(CacheError, match=r"row_level\.npy: file is too long"):
        read_cache(written)


def test_flipped_byte_fails_the_checksum(written):
    file = written / "entry_boxes.npy"
    data = bytearray(file.read_bytes())
    data[-5] ^= 0x01
    file.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"entry_boxes\.npy: SHA-256 checksum mismatch"):
        read_cache(written)
    read_cache(written, verify=False)  # a bit flip in a mantissa breaks no invariant


def test_wrong_version_says_found_and_supported(written):
    document = json.loads((written / "meta.json").read_text())
    document["version"] = 3
    (written / "meta.json").write_text(json.dumps(document))
    with pytest.raises(CacheError, match=r"meta\.json: cache format version 3 is not supported .*reads versions 1, 2"):
        read_cache(written)


def test_a_version_1_cache_is_still_read(written):
    import hashlib

    from detsearch.detection.cache.meta import canonical_json, render_meta

    document = json.loads((written / "meta.json").read_text())
    assert document["version"] == 2
    document["version"] = 1
    del document["meta_sha256"]
    document["meta_sha256"] = hashlib.sha256(canonical_json(document)).hexdigest()
    (written / "meta.json").write_text(render_meta(document))
    old = read_cache(written)
    assert old.meta.version == 1 and old.row_xywh is None and old.entry_score.dtype == np.float32


def test_missing_array_is_reported(written):
    os.remove(written / "row_objectness.npy")
    with pytest.raises(CacheError, match=r"row_objectness\.npy: missing \(listed in meta\.json\)"):
        read_cache(written)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must hold a JSON object"),
        (b'{"format": "something else"}', "'format' is 'something else'"),
        (b"", "not valid JSON"),
    ],
)
def test_garbage_meta_json_is_reported(written, content, message):
    (written / "meta.json").write_bytes(content)
    with pytest.raises(CacheError, match=rf"meta\.json: {message}"):
        read_cache(written)


def test_edited_meta_json_fails_its_checksum(written):
    text = (written / "meta.json").read_text()
    (written / "meta.json").write_text(text.replace('"score_floor": 0.1', '"score_floor": 0.2'))
    with pytest.raises(CacheError, match="meta_sha256 does not match"):
        read_cache(written)


def test_missing_meta_json_and_missing_directory(written, tmp_path):
    os.remove(written / "meta.json")
    with pytest.raises(CacheError, match=r"meta\.json: missing"):
        read_cache(written)
    with pytest.raises(CacheError, match="no cache here"):
        read_cache(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheError, match="is not a directory"):
        read_cache(tmp_path / "file")


def test_array_header_disagreeing_with_meta_is_reported(written):
    np.save(written / "row_level.npy", np.zeros(3, dtype="<i8"))
    with pytest.raises(CacheError, match=r"row_level\.npy: header says dtype '<i8'"):
        read_cache(written)


# --------------------------------------------------------------------------------------------
# Shards


def test_shards_merge_into_the_whole_cache(tmp_path):
    kwargs = meta_kwargs("two_stage")
    whole = CacheBuilder(**kwargs)
    add_random_images(whole, np.random.default_rng(11), "two_stage", 10, level=True)
    whole = whole.build()
    root = tmp_path / "sharded"
    plan = plan_shards(10, 4)
    assert [(s.image_start, s.image_stop) for s in plan] == [(0, 4), (4, 8), (8, 10)]

    def part(spec):
        return slice(spec.image_start, spec.image_stop)

    def write_shard(spec, via_writer):
        images = part(spec)
        if via_writer:
            with CacheWriter(root, shard=spec, **kwargs) as writer:
                for i in range(images.start, images.stop):
                    rows, entries = whole.image_rows(i), whole.image_entries(i)
                    writer.add_image(
                        whole.meta.image_ids[i], whole.meta.image_sizes[i], whole.row_boxes[rows],
                        whole.entry_row[entries] - rows.start, whole.entry_class[entries], whole.entry_score[entries],
                        entry_boxes=whole.entry_boxes[entries], row_objectness=whole.row_objectness[rows],
                        row_level=whole.row_level[rows],
                    )
        else:
            builder = CacheBuilder(**kwargs)
            for i in range(images.start, images.stop):
                rows, entries = whole.image_rows(i), whole.image_entries(i)
                builder.add_image(
                    whole.meta.image_ids[i], whole.meta.image_sizes[i], whole.row_boxes[rows],
                    whole.entry_row[entries] - rows.start, whole.entry_class[entries], whole.entry_score[entries],
                    entry_boxes=whole.entry_boxes[entries], row_objectness=whole.row_objectness[rows],
                    row_level=whole.row_level[rows],
                )
            write_cache(root, builder.build(), shard=spec)

    write_shard(plan[2], via_writer=True)
    write_shard(plan[0], via_writer=False)
    assert completed_shards(root) == (0, 2)
    with pytest.raises(CacheError, match="missing shard"):
        merge_shards(root)
    with pytest.raises(CacheError, match="not a merged cache.*call merge_shards"):
        read_cache(root)
    write_shard(plan[1], via_writer=True)
    write_shard(plan[1], via_writer=False)  # writing a shard again is idempotent
    assert completed_shards(root) == (0, 1, 2)
    merged = merge_shards(root)
    assert_same(whole, merged)
    assert_same(whole, read_cache(root))
    assert_same(whole, merge_shards(root))  # merging again gives the same cache
    assert_same(whole, read_cache(root))
    with pytest.raises(CacheError, match="holds shards/"):
        write_cache(root, whole)
    assert sorted(os.listdir(tmp_path)) == ["sharded"]


def one_image_cache(image_id, floor=0.0):
    builder = CacheBuilder(kind="one_stage", category_ids=[1], score_floor=floor)
    builder.add_image(image_id, (5, 5), [[0, 0, 1, 1]], [0], [0], [0.5])
    return builder.build()


def two_image_cache(first_id):
    builder = CacheBuilder(kind="one_stage", category_ids=[1], score_floor=0.0)
    builder.add_image(first_id, (5, 5), [[0, 0, 1, 1]], [0], [0], [0.5])
    builder.add_image(first_id + 1, (5, 5), [], [], [], [])
    return builder.build()


def test_merge_refuses_overlap_gap_and_missing_last(tmp_path):
    root = tmp_path / "overlap"
    write_cache(root, two_image_cache(1), shard=ShardSpec(0, 0, 2, 4))
    write_cache(root, two_image_cache(3), shard=ShardSpec(1, 1, 3, 4))
    with pytest.raises(CacheError, match=r"shard 00001 \[1, 3\) overlaps shard 00000 \[0, 2\)"):
        merge_shards(root)
    root = tmp_path / "gap"
    write_cache(root, one_image_cache(1), shard=ShardSpec(0, 0, 1, 4))
    write_cache(root, two_image_cache(3), shard=ShardSpec(1, 2, 4, 4))
    with pytest.raises(CacheError, match=r"images \[1, 2\) between shard 00000 and shard 00001 are in no shard"):
        merge_shards(root)
    root = tmp_path / "last"
    write_cache(root, two_image_cache(1), shard=ShardSpec(0, 0, 2, 4))
    with pytest.raises(CacheError, match=r"images \[2, 4\) are in no shard \(missing shard\(s\) after 00000\)"):
        merge_shards(root)
    with pytest.raises(CacheError, match="has no shards/ directory"):
        merge_shards(tmp_path / "nothing")


def test_merge_refuses_inconsistent_shards(tmp_path):
    root = tmp_path / "floor"
    write_cache(root, one_image_cache(1, floor=0.0), shard=ShardSpec(0, 0, 1, 2))
    write_cache(root, one_image_cache(2, floor=0.2), shard=ShardSpec(1, 1, 2, 2))
    with pytest.raises(CacheError, match="shard 00001 has score_floor = 0.2, shard 00000 has 0.0"):
        merge_shards(root)
    root = tmp_path / "duplicate"
    write_cache(root, one_image_cache(1), shard=ShardSpec(0, 0, 1, 2))
    write_cache(root, one_image_cache(1), shard=ShardSpec(1, 1, 2, 2))
    with pytest.raises(CacheError, match="image_id 1 is in shard 00000 and shard 00001"):
        merge_shards(root)


def test_shard_writer_checks_its_image_count(tmp_path):
    spec = ShardSpec(0, 0, 2, 2)
    writer = CacheWriter(tmp_path / "r", shard=spec, kind="one_stage", category_ids=[1], score_floor=0.0)
    writer.add_image(1, (5, 5), [], [], [], [])
    with pytest.raises(CacheError, match=r"covers images \[0, 2\) but 1 were added"):
        writer.close()
    writer.add_image(2, (5, 5), [], [], [], [])
    with pytest.raises(CacheError, match="all 2 already added"):
        writer.add_image(3, (5, 5), [], [], [], [])
    writer.close()
    assert completed_shards(tmp_path / "r") == (0,)
    with pytest.raises(CacheError, match="ShardSpec needs"):
        ShardSpec(0, 2, 2, 2)


MERGE_CRASH = """
    import os
    from detsearch.detection.cache import merge_shards
    real_replace = os.replace
    def replace(src, dst):
        if str(dst).endswith("meta.json"):
            os._exit(9)
        return real_replace(src, dst)
    os.replace = replace
    merge_shards({path!r})
"""


def test_merge_killed_before_its_commit_leaves_no_cache(tmp_path):
    root = tmp_path / "r"
    for spec in plan_shards(2, 1):
        write_cache(root, one_image_cache(spec.index + 1), shard=spec)
    merge_shards(root)
    result = run_python(MERGE_CRASH.format(path=str(root)))
    assert result.returncode == 9, result.stderr
    with pytest.raises(CacheError, match="not a merged cache"):
        read_cache(root)
    assert merge_shards(root).num_images() == 2
    assert sorted(os.listdir(tmp_path)) == ["r"]


# --------------------------------------------------------------------------------------------
# COCO detections importer


ANNOTATIONS = {
    "images": [
        {"id": 20, "height": 100, "width": 200, "file_name": "b.jpg"},
        {"id": 10, "height": 50, "width": 60, "file_name": "a.jpg"},
        {"id": 30, "height": 10, "width": 10, "file_name": "empty.jpg"},
    ],
    "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}],
    "annotations": [],
}


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_coco_import_keeps_every_record_in_file_order_at_full_precision(tmp_path):
    records = [
        det(20, 3, [1.5, 2.0, 10.0, 20.0], 0.9),
        det(10, 1, [0, 0, 5, 5], 0.3),
        det(20, 1, [1.5, 2.0, 10.0, 20.0], 0.4),  # same box as record 0: a row of its own
        det(20, 3, [1.5, 2.0, 10.0, 20.0], 0.8),
        det(20, 2, [4, 4, 0, 0], 0.05),  # below the floor: dropped
        det(10, 2, [0.1, 0.2, 5.3, 5.7], 0.7000000001),  # beyond float32: kept as given
    ]
    original = json.loads(json.dumps(ANNOTATIONS))
    (tmp_path / "d.json").write_text(json.dumps(records))
    (tmp_path / "a.json").write_text(json.dumps(ANNOTATIONS))
    cache = import_coco_detections(tmp_path / "d.json", tmp_path / "a.json", score_floor=0.1, source={"model": "m"})
    assert ANNOTATIONS == original
    meta = cache.meta
    assert meta.kind == "one_stage" and meta.image_ids == (10, 20, 30) and meta.version == 2
    assert meta.image_sizes == ((50, 60), (100, 200), (10, 10))
    assert meta.category_ids == (1, 2, 3) and meta.category_names == ("person", "bicycle", "cat")
    assert meta.source == {"importer": "import_coco_detections", "model": "m"}
    np.testing.assert_array_equal(cache.row_offsets, [0, 2, 5, 5])  # image 30: no rows
    np.testing.assert_array_equal(cache.entry_offsets, [0, 2, 5, 5])
    np.testing.assert_array_equal(cache.entry_row, [0, 1, 2, 3, 4])  # one entry per row
    np.testing.assert_array_equal(cache.entry_class, [0, 1, 2, 0, 2])  # file order within an image
    assert cache.entry_score.dtype == np.float64 and cache.row_xywh.dtype == np.float64
    assert cache.entry_score.tolist() == [0.3, 0.7000000001, 0.9, 0.4, 0.8]
    assert cache.row_xywh.tolist() == [[0, 0, 5, 5], [0.1, 0.2, 5.3, 5.7], [1.5, 2.0, 10.0, 20.0],
                                       [1.5, 2.0, 10.0, 20.0], [1.5, 2.0, 10.0, 20.0]]
    xywh = np.array(cache.row_xywh)
    expected = np.stack([xywh[:, 1], xywh[:, 0], xywh[:, 1] + xywh[:, 3], xywh[:, 0] + xywh[:, 2]], 1).astype(np.float32)
    np.testing.assert_array_equal(cache.row_boxes, expected)  # rounded once, for NMS
    same = import_coco_detections(records, ANNOTATIONS, score_floor=0.1, source={"model": "m"})
    assert_same(cache, same)
    written = read_cache(write_cache(tmp_path / "c", cache))
    assert_same(cache, written)


def test_row_xywh_must_match_the_row_boxes():
    cache = import_coco_detections([det(10, 1, [1, 2, 3, 4], 0.5)], ANNOTATIONS)
    arrays = arrays_of(cache)
    arrays["row_xywh"] = arrays["row_xywh"] + 1.0
    with pytest.raises(CacheError, match=r"row_xywh\[0\] = \[2.0, 3.0, 4.0, 5.0\] must be finite with w, h >= 0, and row_boxes\[0\] its"):
        DetectionCache.from_arrays(cache.meta, **arrays)


def test_coco_import_accepts_a_pycocotools_object():
    coco_module = pytest.importorskip("pycocotools.coco")
    coco = coco_module.COCO()
    coco.dataset = json.loads(json.dumps(ANNOTATIONS))
    coco.createIndex()
    cache = import_coco_detections([det(30, 2, [1, 1, 2, 2], 1)], coco)
    assert cache.meta.image_ids == (10, 20, 30) and cache.num_entries() == 1


def test_coco_import_of_real_coco_results_round_trips_to_xywh(tmp_path):
    folder = next((f for f in COCO_100 if f.is_dir()), None)
    if folder is None:
        pytest.skip("COCO val2014 100-image sample not available")
    results = folder / "instances_val2014_fakebbox100_results.json"
    cache = import_coco_detections(results, folder / "instances_val2014_100.json")
    records = json.loads(results.read_text())
    assert cache.num_images() == 100 and len(cache.meta.category_ids) == 80
    assert cache.num_entries() == len(records) == cache.num_rows()
    write_cache(tmp_path / "c", cache)
    back = read_cache(tmp_path / "c")
    expected = sorted((r["image_id"], r["category_id"], round(r["score"], 6), *r["bbox"]) for r in records)
    got = []
    for i, image_id in enumerate(back.meta.image_ids):
        for e in range(back.entry_offsets[i], back.entry_offsets[i + 1]):
            y0, x0, y1, x1 = back.row_boxes[back.entry_row[e]].astype(np.float64)
            got.append((image_id, back.meta.category_ids[back.entry_class[e]], round(float(back.entry_score[e]), 6), x0, y0, x1 - x0, y1 - y0))
    got.sort()
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    np.testing.assert_allclose([g[3:] for g in got], [e[3:] for e in expected], rtol=0, atol=1e-4)


COCO_ERRORS = [
    ("not_a_list", {"image_id": 10}, r"detections must be a JSON list"),
    ("not_a_record", [det(10, 1, [0, 0, 1, 1], 0.5), 7], r"record 1 is not an object"),
    ("missing_key", [det(10, 1, [0, 0, 1, 1], 0.5), {"image_id": 10, "category_id": 1, "bbox": [0, 0, 1, 1]}], r"record 1 lacks 'score'"),
    ("unknown_image", [det(10, 1, [0, 0, 1, 1], 0.5), det(11, 1, [0, 0, 1, 1], 0.5)], r"record 1: image_id 11 is not in the annotations"),
    ("unknown_category", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 4, [0, 0, 1, 1], 0.5)], r"record 1: category_id 4 is not in the annotations"),
    ("nan_score", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 1, [0, 0, 1, 1], math.nan)], r"record 1: score nan is not finite"),
    ("inf_score", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 1, [0, 0, 1, 1], math.inf)], r"record 1: score inf is not finite"),
    ("score_range", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 1, [0, 0, 1, 1], 1.5)], r"record 1: score 1.5 is outside \[0, 1\]"),
    ("negative_score", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 1, [0, 0, 1, 1], -0.1)], r"record 1: score -0.1 is outside"),
    ("negative_width", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 1, [0, 0, -1, 1], 0.5)], r"record 1: bbox \[0, 0, -1, 1\] has negative width or height"),
    ("nan_bbox", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 1, [0, math.nan, 1, 1], 0.5)], r"record 1: bbox .* is not finite"),
    ("short_bbox", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 1, [0, 0, 1], 0.5)], r"record 1: bbox must be 4 numbers"),
    ("string_image_id", [det(10, 1, [0, 0, 1, 1], 0.5), det("10", 1, [0, 0, 1, 1], 0.5)], r"record 1: image_id must be an integer"),
    ("float_category", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 1.0, [0, 0, 1, 1], 0.5)], r"record 1: category_id must be an integer"),
    ("bool_score", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 1, [0, 0, 1, 1], True)], r"record 1: score must be a number"),
    ("string_bbox", [det(10, 1, [0, 0, 1, 1], 0.5), det(10, 1, "0 0 1 1", 0.5)], r"record 1: bbox must be 4 numbers"),
]


@pytest.mark.parametrize("records, message", [c[1:] for c in COCO_ERRORS], ids=[c[0] for c in COCO_ERRORS])
def test_coco_import_errors_name_file_record_and_problem(tmp_path, records, message):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(records))
    with pytest.raises(CacheError, match=re.escape(str(path)) + ": " + message):
        import_coco_detections(path, ANNOTATIONS)


def test_coco_import_reports_malformed_json_and_bad_annotations(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text('[{"image_id": 10,')
    with pytest.raises(CacheError, match=re.escape(str(path)) + ": malformed JSON"):
        import_coco_detections(path, ANNOTATIONS)
    with pytest.raises(CacheError, match="cannot read detections"):
        import_coco_detections(tmp_path / "missing.json", ANNOTATIONS)
    bad = json.loads(json.dumps(ANNOTATIONS))
    del bad["images"][1]["height"]
    with pytest.raises(CacheError, match=r"images\[1\] \(id 10\) has size 0x60: height and width must be given"):
        import_coco_detections([], bad)
    bad = json.loads(json.dumps(ANNOTATIONS))
    bad["categories"][2]["id"] = 3
    with pytest.raises(CacheError, match=r"category id 3 appears twice in 'categories'"):
        import_coco_detections([], bad)
    with pytest.raises(CacheError, match="score_floor must be in"):
        import_coco_detections([], ANNOTATIONS, score_floor=2)


# --------------------------------------------------------------------------------------------
# Two-stage NPZ / JSON importer


def two_stage_arrays():
    # Model columns in another order than the sorted annotation categories (3, 1).
    return dict(
        image_ids=np.array([20, 10]),
        proposal_offsets=np.array([0, 2, 3]),
        proposals=np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]], dtype=np.float32),
        objectness=np.array([0.9, 0.8, 0.1], dtype=np.float32),
        proposal_level=np.array([2, 3, 2]),
        class_scores=np.array([[0.7, 0.2], [0.01, 0.02], [0.5, 0.6]], dtype=np.float32),
        class_boxes=np.arange(24, dtype=np.float32).reshape(3, 2, 4) * np.float32([1, 1, 2, 2]),
        category_ids=np.array([3, 1]),
    )


def test_two_stage_npz_import_derives_entries(tmp_path):
    arrays = two_stage_arrays()
    np.savez(tmp_path / "p.npz", **arrays)
    cache = import_two_stage_npz(tmp_path / "p.npz", ANNOTATIONS, score_floor=0.1, num_proposals=500)
    meta = cache.meta
    assert meta.kind == "two_stage" and meta.image_ids == (20, 10) and meta.image_sizes == ((100, 200), (50, 60))
    assert meta.category_ids == (1, 2, 3) and meta.num_proposals == 500 and meta.score_floor == 0.1
    np.testing.assert_array_equal(cache.row_offsets, [0, 2, 3])
    np.testing.assert_array_equal(cache.row_boxes, arrays["proposals"])
    np.testing.assert_array_equal(cache.row_objectness, arrays["objectness"])
    np.testing.assert_array_equal(cache.row_level, arrays["proposal_level"])
    # proposal 1 has no score above the floor: a row without entries.
    np.testing.assert_array_equal(cache.entry_offsets, [0, 2, 4])
    np.testing.assert_array_equal(cache.entry_row, [0, 0, 2, 2])
    np.testing.assert_array_equal(cache.entry_class, [0, 2, 0, 2])  # category 1 -> 0, category 3 -> 2
    np.testing.assert_array_equal(cache.entry_score, np.float32([0.2, 0.7, 0.6, 0.5]))
    boxes = arrays["class_boxes"]
    np.testing.assert_array_equal(cache.entry_boxes, [boxes[0, 1], boxes[0, 0], boxes[2, 1], boxes[2, 0]])
    document = {name: value.tolist() for name, value in arrays.items()}
    (tmp_path / "p.json").write_text(json.dumps(document))
    from_json = import_two_stage_json(tmp_path / "p.json", ANNOTATIONS, score_floor=0.1, num_proposals=500)
    assert from_json.meta.source["importer"] == "import_two_stage_json"
    for name, array in cache.arrays().items():
        np.testing.assert_array_equal(array, getattr(from_json, name))


def _drop(name):
    def mutate(arrays):
        del arrays[name]
    return mutate


TWO_STAGE_ERRORS = [
    ("missing", _drop("objectness"), r"missing array\(s\) \['objectness'\]"),
    ("unknown", _replace("proposal_levels", np.zeros(3)), r"unknown array\(s\) \['proposal_levels'\]"),
    ("shape", _replace("class_boxes", np.zeros((3, 2, 3))), r"class_boxes has shape \(3, 2, 3\), expected \(3, 2, 4\)"),
    ("offsets", _replace("proposal_offsets", np.array([0, 3, 2])), r"proposal_offsets\[2\] = 2 is less than"),
    ("offsets_end", _replace("proposal_offsets", np.array([0, 1, 2])), r"proposal_offsets\[-1\] = 2, but proposals has 3"),
    ("image", _replace("image_ids", np.array([20, 11])), r"image_ids\[1\] = 11 is not in the annotations"),
    ("duplicate_image", _replace("image_ids", np.array([20, 20])), r"image_ids\[1\] = 20 repeats"),
    ("category", _replace("category_ids", np.array([3, 4])), r"category_ids\[1\] = 4 is not in the annotations"),
    ("score", _set("class_scores", (2, 1), 1.5), r"class_scores\[2, 1\] = 1.5 is above 1"),
    ("proposal", _set("proposals", (1, 0), np.nan), r"proposals\[1\] = \[nan"),
    ("objectness", _set("objectness", 2, 2.0), r"objectness\[2\] = 2.0 is above 1"),
    ("class_box", _set("class_boxes", (1, 1, 3), -100.0), r"class_boxes\[1, 1\] = .* has xmin > xmax"),
    ("level", _set("proposal_level", 0, -2), r"proposal_level\[0\] = -2 is negative"),
    ("float_ids", _replace("image_ids", np.array([20.0, 10.0])), r"image_ids must hold integers"),
    ("top_k", None, r"image 0 \(id 20\) has 2 rows, more than meta.top_k = 1"),
]


@pytest.mark.parametrize("mutate, message", [c[1:] for c in TWO_STAGE_ERRORS], ids=[c[0] for c in TWO_STAGE_ERRORS])
def test_two_stage_import_errors_name_file_array_and_index(tmp_path, mutate, message):
    arrays = two_stage_arrays()
    if mutate is not None:
        mutate(arrays)
    path = tmp_path / "p.npz"
    np.savez(path, **arrays)
    with pytest.raises(CacheError, match=re.escape(str(path)) + ": .*" + message):
        import_two_stage_npz(path, ANNOTATIONS, top_k=1 if mutate is None else None)


def test_two_stage_import_reports_unreadable_files(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CacheError, match="garbage.npz: cannot read NPZ"):
        import_two_stage_npz(garbage, ANNOTATIONS)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(CacheError, match="single .npy array, not an NPZ"):
        import_two_stage_npz(single, ANNOTATIONS)
    document = {name: value.tolist() for name, value in two_stage_arrays().items()}
    document["proposals"] = [[0, 0, 10, 10], [5, 5, 20], [1, 1, 2, 2]]
    with pytest.raises(CacheError, match="proposals is not a rectangular array"):
        import_two_stage_json(document, ANNOTATIONS)


# --------------------------------------------------------------------------------------------
# Fuzzed reader: a damaged cache reads back equal or raises CacheError, nothing else


@pytest.fixture(scope="module")
def fuzz_templates(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    templates = []
    for kind in ("one_stage", "two_stage"):
        cache = make_cache(kind, num_images=3, seed=4)
        write_cache(root / kind, cache)
        templates.append((root / kind, read_cache(root / kind)))
    return templates


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    template=st.integers(0, 1),
    file_choice=st.integers(0, 20),
    mutations=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
    truncate=st.one_of(st.none(), st.floats(0, 1)),
)
def test_reader_survives_random_damage(fuzz_templates, template, file_choice, mutations, truncate):
    source, original = fuzz_templates[template]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "c"
        shutil.copytree(source, path)
        files = sorted(os.listdir(path))
        target = path / files[file_choice % len(files)]
        data = bytearray(target.read_bytes())
        for position, value in mutations:
            if data:
                data[int(position * len(data))] = value
        if truncate is not None:
            data = data[: int(truncate * len(data))]
        target.write_bytes(bytes(data))
        try:
            back = read_cache(path, verify=True)
        except CacheError:
            return
        assert_same(original, back)


# --------------------------------------------------------------------------------------------
# Dependencies


def test_module_does_not_import_tensorflow():
    result = run_python(
        """
        import sys
        import detsearch.detection.cache
        assert not any(name.split(".")[0] in ("tensorflow", "tf_keras", "keras") for name in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr


def test_public_names():
    for name in cache_module.__all__:
        assert hasattr(cache_module, name)


def test_settings_object_or_keywords_give_the_same_cache(tmp_path):
    from detsearch.detection.cache import CacheSettings

    kwargs = meta_kwargs("two_stage")
    settings = CacheSettings(**kwargs)
    by_settings, by_keywords = CacheBuilder(settings), CacheBuilder(**kwargs)
    for target in (by_settings, by_keywords):
        add_random_images(target, np.random.default_rng(5), "two_stage", 4, level=True)
    assert_same(by_settings.build(), by_keywords.build())
    assert by_settings.build().meta.settings == settings
    with CacheWriter(tmp_path / "c", settings) as writer:
        add_random_images(writer, np.random.default_rng(5), "two_stage", 4, level=True)
    assert_same(by_settings.build(), read_cache(tmp_path / "c"))
    with pytest.raises(TypeError, match="not both"):
        CacheBuilder(settings, kind="two_stage")
    with pytest.raises(TypeError, match="unexpected keyword"):
        CacheWriter(tmp_path / "d", kind="one_stage", category_ids=[1], score_floor=0.0, colour="red")
    with pytest.raises(CacheError, match="meta.score_floor must be in"):
        CacheSettings(kind="one_stage", category_ids=[1], score_floor=2.0)


def test_settings_meta_is_the_meta_of_those_images():
    from detsearch.detection.cache import CacheSettings

    settings = CacheSettings(kind="one_stage", category_ids=[3, 1], score_floor=0.25, top_k=5)
    meta = settings.meta([7, 8], [(10, 20), (30, 40)])
    assert meta == CacheMeta(CACHE_VERSION, "one_stage", (7, 8), ((10, 20), (30, 40)), (3, 1), 0.25, top_k=5)
    assert meta.kind is cache_module.CacheKind.ONE_STAGE and meta.settings == settings
