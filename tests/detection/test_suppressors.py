"""The contract every `Suppressor` keeps, run over each implementation, and the greedy walk held
against its reference. The figures each one gives are tested against NMS from scratch plus
pycocotools in test_sweep.py, test_nms_v2.py and test_operating_points.py."""

import numpy as np
import pytest

from detsearch.detection.cocoeval import load_ground_truth
from detsearch.detection.sweep import NmsBackend, PostProcessing
from detsearch.detection.sweep.engine import SweepEngine
from detsearch.detection.sweep.grid import Grid, NmsKey
from detsearch.detection.sweep.suppressors import (BatchedProposalNms, GreedyWalkNms, ReferenceGreedyNms,
                                                   Selection, TiledProposalNms, TiledV2Nms, V1Nms, first_stage_nms,
                                                   second_stage_nms)
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import random_case

CAP = 4

# (nms_version, backend, the implementation it runs)
SECOND_STAGE = [("batched", "fast", GreedyWalkNms), ("batched", "reference", ReferenceGreedyNms), ("v2", "fast", TiledV2Nms),
                ("v1", "fast", V1Nms)]


def engine_of(kind, version, backend, proposal_nms="tiled", seed=5, cap=CAP):
    cache, dataset = random_case(seed, kind, ties=True, max_rows=60, num_images=6)
    grid = ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.5])
    if kind == "two_stage":
        grid = grid.replace(nms_score_threshold=[0.0, 0.3], nms_iou_threshold=[0.5, 0.7])
    post = PostProcessing(nms_version=version, max_detections_per_class=cap, max_total_detections=cap,
                          proposal_nms=proposal_nms if kind == "two_stage" else "batched")
    return SweepEngine(cache, load_ground_truth(dataset), Grid.build(cache.meta.kind, grid, post), post.checked(cache, grid),
                       nms_backend=backend)


def keys_of(kind, version):
    agnostic = (False,) if version == "v1" else (False, True)  # Model Garden's v1 is class-aware
    if kind == "one_stage":
        return [NmsKey(iou, flag) for flag in agnostic for iou in (0.3, 0.5, 1.0)]
    return [NmsKey(iou, flag, nms_score, nms_iou) for nms_iou in (0.5, 0.7) for nms_score in (0.0, 0.3) for flag in agnostic
            for iou in (0.3, 0.5, 1.0)]


@pytest.mark.parametrize("kind, version, backend, implementation",
                         [(kind, *case) for kind in ("one_stage", "two_stage") for case in SECOND_STAGE
                          if not (kind == "two_stage" and case[0] == "v1")],  # v1 is swept one-stage
                         ids=lambda value: getattr(value, "__name__", None))
def test_second_stage_contract(kind, version, backend, implementation):
    engine = engine_of(kind, version, backend)
    suppressor = engine.nms_of(NmsKey(0.5))
    assert type(suppressor) is implementation
    candidates = engine.candidates
    for key in keys_of(kind, version):
        selection = engine.selection(key)
        kept = suppressor.kept(selection, key.iou_threshold)
        # positions among the candidates, of the selection only, each once
        allowed = np.arange(len(candidates.entries)) if selection.positions is None else selection.positions
        assert kept.dtype.kind == "i" and np.isin(kept, allowed).all() and len(np.unique(kept)) == len(kept)
        # image by image in output order (descending float32 score), at most CAP per image and per class
        image, score, classes = candidates.image[kept], candidates.score[kept], candidates.classes[kept]
        assert (np.diff(image) >= 0).all()
        assert all((np.diff(score[image == i]) <= 0).all() for i in range(candidates.num_images))
        assert all(np.bincount(image[classes == c], minlength=1).max(initial=0) <= CAP for c in range(candidates.num_classes))
        assert np.bincount(image, minlength=1).max(initial=0) <= CAP
        # the answer does not depend on the memo: again, after prepare, and from a fresh instance
        assert np.array_equal(suppressor.kept(selection, key.iou_threshold), kept)
        suppressor.prepare(selection)
        assert np.array_equal(suppressor.kept(selection, key.iou_threshold), kept)
        fresh = second_stage_nms(engine.post_processing, NmsBackend(backend), candidates, 0.05)
        assert np.array_equal(fresh.kept(selection, key.iou_threshold), kept)


@pytest.mark.parametrize("kind", ["one_stage", "two_stage"])
@pytest.mark.parametrize("seed, cap", [(1, 10), (2, 100), (3, 100)])
def test_the_greedy_walk_keeps_what_its_reference_keeps(kind, seed, cap):
    fast, slow = (engine_of(kind, "batched", backend, seed=seed, cap=cap) for backend in ("fast", "reference"))
    lengths = set()
    for key in keys_of(kind, "batched"):
        walked = fast.nms_of(key).kept(fast.selection(key), key.iou_threshold)
        assert np.array_equal(walked, slow.nms_of(key).kept(slow.selection(key), key.iou_threshold))
        lengths.add(len(walked))
    assert len(lengths) > 1  # the IoU thresholds and class_agnostic kept different boxes


@pytest.mark.parametrize("proposal_nms, implementation", [("tiled", TiledProposalNms), ("batched", BatchedProposalNms)])
def test_first_stage_contract(proposal_nms, implementation):
    engine = engine_of("two_stage", "batched", "reference", proposal_nms=proposal_nms)  # batched: NumPy, no TensorFlow
    assert type(engine.proposal_nms) is implementation
    cache, post = engine.cache, engine.post_processing
    row_offsets = np.asarray(cache.row_offsets, np.int64)
    objectness = np.asarray(cache.row_objectness, np.float32)
    proposals = Selection("proposals", None, row_offsets, True)
    for nms_iou in (0.5, 0.7):
        rows = engine.proposal_nms.kept(proposals, nms_iou)
        image = np.searchsorted(row_offsets, rows, side="right") - 1
        assert (np.diff(image) >= 0).all() and len(np.unique(rows)) == len(rows)
        assert all((np.diff(objectness[rows[image == i]]) <= 0).all() for i in range(len(row_offsets) - 1))
        assert np.bincount(image, minlength=1).max(initial=0) <= post.num_proposals
        assert (objectness[rows] > np.float32(0.0)).all()  # the grid's lowest nms_score_threshold
        fresh = first_stage_nms(post, cache, 0.0)
        assert np.array_equal(fresh.kept(proposals, nms_iou), rows)
