"""``meta.json``: rendering and parsing the document that describes (and checksums) a cache.

One top-level field per line, values compact; the document carries ``meta_sha256``, the
SHA-256 of its canonical JSON (`canonical_json`) without that field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from detsearch.detection.cache.format import (
    ARRAY_NAMES,
    ARRAY_SPECS,
    READABLE_VERSIONS,
    FORMAT_NAME,
    CacheError,
    CacheMeta,
    Presence,
    ShardSpec,
    spec_of,
)

__all__ = ["META_FIELDS", "canonical_json", "meta_document", "parse_meta", "render_meta"]

META_FIELDS = (
    "format",
    "version",
    "kind",
    "box_format",
    "score_floor",
    "top_k",
    "num_proposals",
    "first_stage_iou_thresholds",
    "first_stage_min_score",
    "category_ids",
    "category_names",
    "source",
    "shard",
    "arrays",
    "image_ids",
    "image_sizes",
    "meta_sha256",
)
"""The fields of ``meta.json``, in the order they are written."""

_OPTIONAL_META_FIELDS = ("first_stage_iou_thresholds", "first_stage_min_score")
"""Fields a cache written before they existed lacks (read as None: every row evaluated)."""


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """The bytes ``meta_sha256`` is the SHA-256 of (sorted keys, no spaces, ASCII)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def meta_document(meta: CacheMeta, infos: Mapping[str, Any], shard: ShardSpec | None) -> dict[str, Any]:
    """The ``meta.json`` document of ``meta`` with the arrays' ``infos`` (file, dtype, shape, sha256)."""
    document: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": meta.version,
        "kind": str(meta.kind),
        "box_format": meta.box_format,
        "score_floor": meta.score_floor,
        "top_k": meta.top_k,
        "num_proposals": meta.num_proposals,
        "first_stage_iou_thresholds": (None if meta.first_stage_iou_thresholds is None
                                       else list(meta.first_stage_iou_thresholds)),
        "first_stage_min_score": meta.first_stage_min_score,
        "category_ids": list(meta.category_ids),
        "category_names": None if meta.category_names is None else list(meta.category_names),
        "source": meta.source,
        "shard": None if shard is None else shard.to_json(),
        "arrays": {name: infos[name] for name in ARRAY_NAMES if name in infos},
        "image_ids": list(meta.image_ids),
        "image_sizes": [list(size) for size in meta.image_sizes],
    }
    document["meta_sha256"] = hashlib.sha256(canonical_json(document)).hexdigest()
    return document


def render_meta(document: Mapping[str, Any]) -> str:
    """One top-level field per line, values compact: readable without a 100k-line image list."""
    def compact(value: Any) -> str:
        return json.dumps(value, separators=(", ", ": "), allow_nan=False)

    lines = []
    for key in META_FIELDS:
        value = document[key]
        if key == "arrays" and value:
            inner = ",\n".join(f"    {compact(name)}: {compact(info)}" for name, info in value.items())
            lines.append(f"  {compact(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {compact(key)}: {compact(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def parse_meta(data: bytes, where: str) -> tuple[CacheMeta, dict[str, dict[str, Any]], ShardSpec | None]:
    """Parses and checks ``meta.json`` bytes; returns the meta, the arrays' infos and the shard record.

    Raises:
      CacheError: prefixed with ``where``: not JSON, another format or version, fields
        missing or unknown, a checksum mismatch, a bad field value.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # includes JSONDecodeError, UnicodeDecodeError
        raise CacheError(f"{where}: not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise CacheError(f"{where}: must hold a JSON object, got {type(document).__name__}")
    if document.get("format") != FORMAT_NAME:
        raise CacheError(f"{where}: 'format' is {document.get('format')!r}, expected {FORMAT_NAME!r}")
    version = document.get("version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise CacheError(
            f"{where}: cache format version {version!r} is not supported (this detsearch reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); rewrite the cache with a matching detsearch"
        )
    missing = [key for key in META_FIELDS if key not in document and key not in _OPTIONAL_META_FIELDS]
    unknown = sorted(set(document) - set(META_FIELDS))
    if missing or unknown:
        raise CacheError(f"{where}: missing fields {missing}, unknown fields {unknown}")
    recorded = document.pop("meta_sha256")
    try:
        content_sha256 = hashlib.sha256(canonical_json(document)).hexdigest()
    except (ValueError, RecursionError):  # NaN or Infinity, which the writer never writes
        content_sha256 = None
    if recorded != content_sha256:
        raise CacheError(f"{where}: meta_sha256 does not match the content (meta.json was altered or is corrupt)")
    try:
        meta = CacheMeta(
            version=document["version"],
            kind=document["kind"],
            image_ids=document["image_ids"],
            image_sizes=document["image_sizes"],
            category_ids=document["category_ids"],
            score_floor=document["score_floor"],
            top_k=document["top_k"],
            num_proposals=document["num_proposals"],
            first_stage_iou_thresholds=document.get("first_stage_iou_thresholds"),
            first_stage_min_score=document.get("first_stage_min_score"),
            box_format=document["box_format"],
            category_names=document["category_names"],
            source=document["source"],
        )
    except CacheError as error:
        raise CacheError(f"{where}: {error}") from None
    shard = None
    if document["shard"] is not None:
        record = document["shard"]
        keys = ("index", "image_start", "image_stop", "num_images")
        if not isinstance(record, dict) or sorted(record) != sorted(keys):
            raise CacheError(f"{where}: 'shard' must be null or an object with fields {list(keys)}")
        try:
            shard = ShardSpec(**{key: record[key] for key in keys})
        except CacheError as error:
            raise CacheError(f"{where}: {error}") from None
        if shard.image_stop - shard.image_start != len(meta.image_ids):
            raise CacheError(
                f"{where}: shard covers {shard.image_stop - shard.image_start} images, "
                f"image_ids has {len(meta.image_ids)}"
            )
    arrays = document["arrays"]
    if not isinstance(arrays, dict):
        raise CacheError(f"{where}: 'arrays' must be an object")
    for spec in ARRAY_SPECS:
        presence = spec.presence(meta.kind)
        if spec.name not in arrays and presence is Presence.REQUIRED:
            raise CacheError(f"{where}: 'arrays' lacks {spec.name!r}, required in a {meta.kind} cache")
        if spec.name in arrays and presence is Presence.ABSENT:
            raise CacheError(f"{where}: 'arrays' lists {spec.name!r}, which a {meta.kind} cache must not have")
    unknown = sorted(set(arrays) - set(ARRAY_NAMES))
    if unknown:
        raise CacheError(f"{where}: 'arrays' lists unknown arrays {unknown}")
    for name, info in arrays.items():
        spec = spec_of(name)
        if not isinstance(info, dict) or sorted(info) != ["dtype", "file", "sha256", "shape"]:
            raise CacheError(f"{where}: arrays.{name} must be an object with fields file, dtype, shape, sha256")
        if info["file"] != spec.file_name:
            raise CacheError(f"{where}: arrays.{name}.file is {info['file']!r}, expected {spec.file_name!r}")
        if info["dtype"] not in [dtype.str for dtype in spec.dtypes]:
            expected = " or ".join(repr(dtype.str) for dtype in spec.dtypes)
            raise CacheError(f"{where}: arrays.{name}.dtype is {info['dtype']!r}, expected {expected}")
        shape = info["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) != 1 + len(spec.item_shape)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape)
            or tuple(shape[1:]) != spec.item_shape
        ):
            raise CacheError(f"{where}: arrays.{name}.shape is {shape!r}, expected {spec.shape_text()}")
        digest = info["sha256"]
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise CacheError(f"{where}: arrays.{name}.sha256 is not a hex SHA-256 digest")
    return meta, arrays, shard
