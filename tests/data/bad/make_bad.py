"""Writes the bad-input corpus of ``tests/data/bad/`` (README.md lists every file and its error).

Run from the repository root; it rewrites everything it owns and nothing else:

    .venv/bin/python tests/data/bad/make_bad.py            # into tests/data/bad/
    .venv/bin/python tests/data/bad/make_bad.py --out DIR  # elsewhere (the tests compare)

Every bad file is one of the ``good/`` files with one thing broken, so the error it gives can
only come from that one thing. The caches are written by `detsearch.detection.cache` and then
damaged; where the damage must get past the checksums (a NaN score, an inverted box, a version
the reader does not support), the array's SHA-256 and ``meta_sha256`` are recomputed the way the
writer computes them. The output is deterministic: running this twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from detsearch.detection import cache as cache_module  # noqa: E402
from detsearch.detection.cache import meta as cache_meta  # noqa: E402

GOOD_ANNOTATIONS = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "height": 100, "width": 120},
        {"id": 2, "file_name": "b.jpg", "height": 80, "width": 60},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "area": 1200, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 5, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 0},
    ],
}

GOOD_DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [11, 21, 29, 39], "score": 0.9},
    {"image_id": 1, "category_id": 2, "bbox": [50, 5, 20, 20], "score": 0.6},
    {"image_id": 2, "category_id": 1, "bbox": [1, 1, 28, 28], "score": 0.8},
    {"image_id": 2, "category_id": 2, "bbox": [30, 30, 10, 10], "score": 0.2},
]

GOOD_VOC = """\
<annotation>
  <filename>a.jpg</filename>
  <size><width>120</width><height>100</height><depth>3</depth></size>
  <object>
    <name>cat</name><difficult>0</difficult>
    <bndbox><xmin>11</xmin><ymin>21</ymin><xmax>40</xmax><ymax>60</ymax></bndbox>
  </object>
  <object>
    <name>dog</name><difficult>0</difficult>
    <bndbox><xmin>51</xmin><ymin>6</ymin><xmax>70</xmax><ymax>25</ymax></bndbox>
  </object>
</annotation>
"""

# ParamSpec keyword arguments of the wrong type or out of range (read with ParamSpec.from_dict).
BAD_PARAM_SPECS = {
    "momentum_string": {"momentum": "0.9"},
    "momentum_bool": {"momentum": True},
    "weight_decay_empty_list": {"weight_decay": []},
    "weight_decay_string_in_list": {"weight_decay": [0.001, "1e-4"]},
    "weight_decay_nested_list": {"weight_decay": [[0.001]]},
    "weight_decay_object": {"weight_decay": {"value": 0.001}},
    "learning_rate_misspelled": {"learnig_rate": 0.1},
    "learning_rate_zero": {"learning_rate": 0.0},
    "score_threshold_above_one": {"score_threshold": 1.5},
    "iou_threshold_negative_in_list": {"iou_threshold": [0.5, -0.1]},
}


def dump(value) -> str:
    return json.dumps(value, indent=1) + "\n"


def edited(document, edit):
    copy = json.loads(json.dumps(document))
    edit(copy)
    return copy


def set_path(path, value):
    def edit(document):
        *parents, last = path
        target = document
        for key in parents:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value

    return edit


DELETE = object()


def annotation_files() -> dict[str, str | bytes]:
    good = dump(GOOD_ANNOTATIONS)
    files: dict[str, str | bytes] = {
        "truncated.json": good[: len(good) // 2],
        "empty.json": "",
        "not_utf8.json": b'{"images": [{"id": 1, "file_name": "\xff\xfe.jpg"}]}\n',
        "top_level_list.json": dump([GOOD_ANNOTATIONS]),
    }
    edits = {
        "missing_annotations.json": set_path(["annotations"], DELETE),
        "image_id_string.json": set_path(["images", 1, "id"], "2"),
        "duplicate_image_id.json": set_path(["images", 1, "id"], 1),
        "image_height_text.json": set_path(["images", 0, "height"], "100px"),
        "image_height_huge.json": set_path(["images", 0, "height"], 10**30),
        "image_id_huge.json": set_path(["images", 1, "id"], 10**30),
        "annotation_unknown_image.json": set_path(["annotations", 2, "image_id"], 7),
        "annotation_unknown_category.json": set_path(["annotations", 1, "category_id"], 9),
        "bbox_nan.json": set_path(["annotations", 0, "bbox"], [float("nan"), 20, 30, 40]),
        "bbox_huge.json": set_path(["annotations", 0, "bbox"], [10**400, 20, 30, 40]),
        "bbox_inverted.json": set_path(["annotations", 0, "bbox"], [10, 20, -30, 40]),
        "bbox_zero_area.json": set_path(["annotations", 0, "bbox"], [10, 20, 0, 40]),
        "bbox_three_numbers.json": set_path(["annotations", 0, "bbox"], [10, 20, 30]),
        "area_missing.json": set_path(["annotations", 0, "area"], DELETE),
        "area_nan.json": set_path(["annotations", 0, "area"], float("nan")),
    }
    for name, edit in edits.items():
        files[name] = dump(edited(GOOD_ANNOTATIONS, edit))
    return files


def detection_files() -> dict[str, str]:
    good = dump(GOOD_DETECTIONS)
    files = {
        "truncated.json": good[: len(good) // 2],
        "not_a_list.json": dump({"detections": GOOD_DETECTIONS}),
        "empty_list.json": "[]\n",
    }
    edits = {
        "score_nan.json": set_path([1, "score"], float("nan")),
        "score_inf.json": set_path([1, "score"], float("inf")),
        "score_above_one.json": set_path([1, "score"], 1.5),
        "score_string.json": set_path([1, "score"], "0.6"),
        "score_missing.json": set_path([1, "score"], DELETE),
        "score_huge_integer.json": set_path([1, "score"], 10**400),
        "bbox_inverted.json": set_path([2, "bbox"], [1, 1, 28, -28]),
        "bbox_nan.json": set_path([2, "bbox"], [1, float("nan"), 28, 28]),
        "bbox_huge.json": set_path([2, "bbox"], [1e39, 1, 28, 28]),
        "bbox_huge_integer.json": set_path([2, "bbox"], [10**400, 1, 28, 28]),
        "image_id_float.json": set_path([0, "image_id"], 1.0),
        "unknown_image.json": set_path([3, "image_id"], 424242),
        "unknown_category.json": set_path([3, "category_id"], 3),
    }
    for name, edit in edits.items():
        files[name] = dump(edited(GOOD_DETECTIONS, edit))
    return files


def voc_files() -> dict[str, str]:
    good = GOOD_VOC
    replacements = {
        "wrong_root.xml": ("annotation>", "annotations>"),
        "missing_filename.xml": ("<filename>a.jpg</filename>", ""),
        "missing_size.xml": ("<size><width>120</width><height>100</height><depth>3</depth></size>", ""),
        "size_not_a_number.xml": ("<width>120</width>", "<width>wide</width>"),
        "size_zero.xml": ("<height>100</height>", "<height>0</height>"),
        "missing_name.xml": ("<name>dog</name>", ""),
        "missing_bndbox.xml": ("<bndbox><xmin>51</xmin><ymin>6</ymin><xmax>70</xmax><ymax>25</ymax></bndbox>", ""),
        "missing_xmax.xml": ("<xmax>70</xmax>", ""),
        "coordinate_nan.xml": ("<ymin>6</ymin>", "<ymin>nan</ymin>"),
        "inverted_box.xml": ("<xmin>51</xmin><ymin>6</ymin><xmax>70</xmax>", "<xmin>70</xmin><ymin>6</ymin><xmax>51</xmax>"),
        "zero_area_box.xml": ("<xmin>51</xmin><ymin>6</ymin><xmax>70</xmax>", "<xmin>51</xmin><ymin>6</ymin><xmax>50</xmax>"),
        "box_outside_image.xml": ("<xmax>70</xmax>", "<xmax>500</xmax>"),
        "difficult_two.xml": ("<name>dog</name><difficult>0</difficult>", "<name>dog</name><difficult>2</difficult>"),
    }
    files = {"truncated.xml": good[: len(good) // 2]}
    for name, (old, new) in replacements.items():
        assert good.count(old) >= 1, name
        files[name] = good.replace(old, new) if name == "wrong_root.xml" else good.replace(old, new, 1)
    return files


# --------------------------------------------------------------------------------------------
# caches


def good_cache(annotations=GOOD_ANNOTATIONS, detections=GOOD_DETECTIONS, score_floor=0.0):
    return cache_module.import_coco_detections(detections, annotations, score_floor=score_floor)


def resign(directory: Path, changed_arrays=()) -> None:
    """Recomputes the SHA-256 of ``changed_arrays`` and then ``meta_sha256``, as the writer does."""
    meta_path = directory / cache_module.META_FILE
    document = json.loads(meta_path.read_text())
    for name in changed_arrays:
        data = (directory / f"{name}.npy").read_bytes()
        header_length = 10 + int.from_bytes(data[8:10], "little")
        document["arrays"][name]["sha256"] = hashlib.sha256(data[header_length:]).hexdigest()
    document.pop("meta_sha256")
    document["meta_sha256"] = hashlib.sha256(cache_meta.canonical_json(document)).hexdigest()
    meta_path.write_text(cache_meta.render_meta(document))


def edit_array(directory: Path, name: str, edit) -> None:
    """Rewrites one array in place (same dtype and shape) and re-signs the cache."""
    path = directory / f"{name}.npy"
    array = np.load(path)
    edit(array)
    data = path.read_bytes()
    header_length = 10 + int.from_bytes(data[8:10], "little")
    path.write_bytes(data[:header_length] + array.astype(array.dtype).tobytes())
    resign(directory, [name])


def edit_meta(directory: Path, edit, sign: bool) -> None:
    meta_path = directory / cache_module.META_FILE
    document = json.loads(meta_path.read_text())
    edit(document)
    if sign:
        document.pop("meta_sha256")
        document["meta_sha256"] = hashlib.sha256(cache_meta.canonical_json(document)).hexdigest()
    meta_path.write_text(cache_meta.render_meta(document))


def flip_byte(path: Path, from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep_fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def write_caches(root: Path) -> None:
    write = cache_module.write_cache
    write(root / "good" / "cache", good_cache())
    simple = {
        "wrong_version": lambda d: edit_meta(d, set_path(["version"], 3), sign=True),
        "meta_edited": lambda d: edit_meta(d, set_path(["score_floor"], 0.5), sign=False),
        "meta_truncated": lambda d: truncate(d / "meta.json", 0.5),
        "flipped_byte": lambda d: flip_byte(d / "entry_score.npy", 3),
        "truncated_array": lambda d: truncate(d / "row_boxes.npy", 0.8),
        "missing_array": lambda d: (d / "entry_class.npy").unlink(),
        "nan_score": lambda d: edit_array(d, "entry_score", lambda a: a.__setitem__(1, np.nan)),
        "inf_box": lambda d: edit_array(d, "row_boxes", lambda a: a.__setitem__((2, 3), np.inf)),
        "inverted_box": lambda d: edit_array(d, "row_boxes", lambda a: a.__setitem__((2, 0), a[2, 2] + 5)),
        "decreasing_offsets": lambda d: edit_array(d, "entry_offsets", lambda a: a.__setitem__(1, 5)),
    }
    for name, damage in simple.items():
        directory = root / "caches" / name
        write(directory, good_cache())
        damage(directory)
    # Well-formed caches that do not fit good/annotations.json.
    other = edited(GOOD_ANNOTATIONS, set_path(["images", 1, "id"], 7))
    for record in other["annotations"]:
        record["image_id"] = 7 if record["image_id"] == 2 else record["image_id"]
    write(root / "caches" / "unknown_image", good_cache(other, [dict(d, image_id=7 if d["image_id"] == 2 else d["image_id"]) for d in GOOD_DETECTIONS]))
    three = edited(GOOD_ANNOTATIONS, lambda d: d["categories"].append({"id": 3, "name": "bird"}))
    write(root / "caches" / "unknown_category", good_cache(three, GOOD_DETECTIONS + [dict(GOOD_DETECTIONS[0], category_id=3)]))
    write(root / "caches" / "no_detections", good_cache(detections=[]))
    write(root / "caches" / "score_floor_0.5", good_cache(score_floor=0.5))
    (root / "caches" / "not_a_cache").mkdir(parents=True)
    (root / "caches" / "not_a_cache" / "notes.txt").write_text("not a detection cache\n")


# --------------------------------------------------------------------------------------------


def write_text(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


OWNED = ("good", "annotations", "detections", "caches", "voc", "param_specs.json")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="target directory (default: next to this script)")
    out = parser.parse_args(argv).out
    for name in OWNED:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    write_text(out / "good" / "annotations.json", dump(GOOD_ANNOTATIONS))
    write_text(out / "good" / "detections.json", dump(GOOD_DETECTIONS))
    write_text(out / "good" / "voc.xml", GOOD_VOC)
    for name, content in annotation_files().items():
        write_text(out / "annotations" / name, content)
    for name, content in detection_files().items():
        write_text(out / "detections" / name, content)
    for name, content in voc_files().items():
        write_text(out / "voc" / name, content)
    write_text(out / "param_specs.json", dump(BAD_PARAM_SPECS))
    write_caches(out)


if __name__ == "__main__":
    main()
