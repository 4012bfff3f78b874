"""Versioned on-disk cache of raw (pre-NMS) detector predictions.

The detection sweep re-runs NMS and COCO evaluation on these caches instead of running the
network again. One cache holds, for every image of an evaluation set:

- **rows**: one-stage (SSD, RetinaNet): the decoded candidate boxes before NMS; two-stage
  (Faster R-CNN): the RPN proposals before first-stage NMS, with their objectness.
- **entries**: one (row, class) pair with its score (>= ``score_floor``); two-stage entries also
  carry the second-stage box of that class for that proposal.

In memory a cache is a `DetectionCache` of flat arrays (often ``np.memmap``); on disk it is a
directory of ``.npy`` files plus ``meta.json``. Every write is atomic (the directory rename is
the commit), every read checks the version, each array's dtype, shape and SHA-256, and the
cross-array invariants. ``docs/cache_format.md`` describes the format in full.

Modules: `format` (constants, `CacheKind`, array specs, `CacheSettings`, `CacheMeta`,
`ShardSpec`), `values` (value checks, `CacheError`), `arrays` (`DetectionCache` and its
validation, the per-image stream), `builder` (`CacheBuilder`), `writer` (`CacheWriter`,
`write_cache`), `meta` (``meta.json``), `reader` (`read_cache`), `shards` (`merge_shards`),
`importers`. This package imports numpy and the standard library only.
"""

from detsearch.detection.cache.arrays import DetectionCache
from detsearch.detection.cache.builder import CacheBuilder
from detsearch.detection.cache.format import (
    ARRAY_NAMES,
    BOX_FORMAT,
    CACHE_VERSION,
    READABLE_VERSIONS,
    DEFAULT_NUM_PROPOSALS,
    FORMAT_NAME,
    META_FILE,
    SHARDS_DIR,
    CacheKind,
    CacheMeta,
    CacheSettings,
    ShardSpec,
    plan_shards,
)
from detsearch.detection.cache.importers import import_coco_detections, import_two_stage_json, import_two_stage_npz
from detsearch.detection.cache.reader import read_cache
from detsearch.detection.cache.shards import completed_shards, merge_shards
from detsearch.detection.cache.values import CacheError
from detsearch.detection.cache.writer import CacheWriter, write_cache

__all__ = [
    "ARRAY_NAMES",
    "BOX_FORMAT",
    "CACHE_VERSION",
    "READABLE_VERSIONS",
    "DEFAULT_NUM_PROPOSALS",
    "FORMAT_NAME",
    "META_FILE",
    "SHARDS_DIR",
    "CacheBuilder",
    "CacheError",
    "CacheKind",
    "CacheMeta",
    "CacheSettings",
    "CacheWriter",
    "DetectionCache",
    "ShardSpec",
    "completed_shards",
    "import_coco_detections",
    "import_two_stage_json",
    "import_two_stage_npz",
    "merge_shards",
    "plan_shards",
    "read_cache",
    "write_cache",
]
