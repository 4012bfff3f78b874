"""`PostProcessing`: one check against a cache fills the defaults and refuses what the cache or
the other settings cannot answer; `check_score_floor` is the grid's one rule against the floor."""

import dataclasses
import json

import numpy as np
import pytest

from detsearch.detection.sweep import NmsVersion, PostProcessing, ProposalNms, check_score_floor
from detsearch.errors import BadSetting
from detsearch.params import ParamSpec
from tests.detection.sweep_cases import random_case


def test_defaults_filled_once_per_kind():
    one, _ = random_case(1, "one_stage")
    checked = PostProcessing().checked(one)
    assert checked == PostProcessing(nms_version=NmsVersion.BATCHED, max_detections_per_class=100, max_total_detections=100,
                                     class_agnostic=False, pre_nms_top_k=None, soft_nms_sigma=None,
                                     proposal_nms=ProposalNms.BATCHED,
                                     num_proposals=None, per_level=False, proposal_top_k=None, max_eval_detections=100)
    assert checked.checked(one) == checked  # checking a checked one changes nothing
    two, _ = random_case(1, "two_stage", num_proposals=12)
    tiled = PostProcessing(nms_version="v2", proposal_nms="tiled").checked(two)
    assert (tiled.pre_nms_top_k, tiled.proposal_top_k, tiled.num_proposals, tiled.per_level) == (5000, 1000, 12, True)
    assert tiled.checked(two) == tiled
    without_levels, _ = random_case(1, "two_stage", levels=False)
    assert PostProcessing().checked(without_levels).per_level is False


def test_strings_are_taken_as_members_and_written_back_as_strings():
    post = PostProcessing(nms_version="v2", proposal_nms="tiled", num_proposals=300)
    assert post.nms_version is NmsVersion.V2 and post.proposal_nms is ProposalNms.TILED
    assert json.loads(json.dumps(post.to_dict())) == {
        "nms_version": "v2", "max_detections_per_class": None, "max_total_detections": None, "class_agnostic": False,
        "pre_nms_top_k": None, "soft_nms_sigma": None, "proposal_nms": "tiled", "num_proposals": 300, "per_level": None, "proposal_top_k": None,
        "max_eval_detections": None, "score_dtype": "float32"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        post.num_proposals = 5


@pytest.mark.parametrize("kind, settings, message", [
    ("one_stage", dict(max_detections_per_class=0), "max_detections_per_class must be an integer >= 1, got 0"),
    ("one_stage", dict(max_total_detections=2.5), "max_total_detections must be an integer >= 1, got 2.5"),
    ("one_stage", dict(class_agnostic=1), "class_agnostic must be a bool, got 1"),
    ("one_stage", dict(per_level="yes"), "per_level must be a bool"),
    ("one_stage", dict(num_proposals=300), "num_proposals is a setting of two-stage sweeps"),
    ("one_stage", dict(per_level=True), "per_level is a setting of two-stage sweeps"),
    ("two_stage", dict(num_proposals=0), "num_proposals must be an integer >= 1, got 0"),
    ("two_stage", dict(nms_version="v2", pre_nms_top_k=5), "pre_nms_top_k 5 < num_proposals 12"),
    ("two_stage", dict(proposal_nms="tiled", per_level=False), "proposal_nms tiled runs per FPN level"),
    ("two_stage", dict(proposal_nms="tiled", proposal_top_k=-1), "proposal_top_k must be an integer >= 1, got -1"),
    ("one_stage", dict(max_eval_detections=0), "max_eval_detections must be an integer >= 1, got 0"),
])
def test_bad_settings_name_the_setting(kind, settings, message):
    cache, _ = random_case(1, kind, num_proposals=12)
    with pytest.raises(BadSetting, match=message):
        PostProcessing(**settings).checked(cache)


def test_only_a_detection_cache_is_checked():
    with pytest.raises(TypeError, match="cache must be a detsearch.detection.cache.DetectionCache, got dict"):
        PostProcessing().checked({})


def test_the_score_floor_bounds_the_grid_in_float32():
    cache, _ = random_case(1, "one_stage", floor=0.05)
    grid = ParamSpec(score_threshold=[0.05, 0.3], iou_threshold=[0.5])
    PostProcessing().checked(cache, grid)
    # below 0.05 in float64, equal to it in float32: a threshold there keeps only recorded entries
    assert 0.05 - 1e-12 < 0.05 and np.float32(0.05 - 1e-12) == np.float32(0.05)
    check_score_floor(ParamSpec(score_threshold=[0.05 - 1e-12]), 0.05)
    below = ParamSpec(score_threshold=[0.04, 0.3], iou_threshold=[0.5])
    message = "score_threshold 0.04 is below the cache's score floor 0.05: entries under the floor were not recorded"
    with pytest.raises(BadSetting, match=message):
        PostProcessing().checked(cache, below)
    with pytest.raises(BadSetting, match=message):
        check_score_floor(below, 0.05)  # before recording: the floor a cache will have
    check_score_floor(ParamSpec(iou_threshold=[0.5]), 0.05)  # no score thresholds: nothing to check


def test_first_stage_thresholds_the_cache_was_not_recorded_for():
    cache, _ = random_case(2, "two_stage", num_proposals=12)
    meta = dataclasses.replace(cache.meta, first_stage_iou_thresholds=(0.5, 0.7), first_stage_min_score=0.1)
    recorded = type(cache).from_arrays(meta, **cache.arrays())
    grid = dict(score_threshold=[0.05], iou_threshold=[0.5])
    PostProcessing().checked(recorded, ParamSpec(nms_score_threshold=[0.1], nms_iou_threshold=[0.5, 0.7], **grid))
    for first_stage, message in [
        (dict(nms_score_threshold=[0.1], nms_iou_threshold=[0.6]), "nms_iou_threshold 0.6: the cache's second stage"),
        (dict(nms_score_threshold=[0.0], nms_iou_threshold=[0.5]), "nms_score_threshold 0: the cache's second stage"),
        (dict(nms_score_threshold=[0.1], nms_iou_threshold=[0.0]), "nms_iou_threshold 0 is not swept"),
    ]:
        with pytest.raises(BadSetting, match=message):
            PostProcessing().checked(recorded, ParamSpec(**first_stage, **grid))
    with pytest.raises(BadSetting, match="num_proposals 13 .per_level True.: the cache's second stage"):
        PostProcessing(num_proposals=13).checked(recorded, ParamSpec(nms_score_threshold=[0.1], nms_iou_threshold=[0.5],
                                                                     **grid))


@pytest.mark.parametrize("settings, message", [
    (dict(soft_nms_sigma=0.5), "soft_nms_sigma is a setting of nms_version v1"),
    (dict(nms_version="v1", soft_nms_sigma=-1.0), "soft_nms_sigma must be None or a number >= 0, got -1.0"),
    (dict(nms_version="v1", soft_nms_sigma=float("nan")), "soft_nms_sigma must be None or a number >= 0"),
    (dict(nms_version="v1", class_agnostic=True), "Model Garden runs class-agnostic NMS with v2 only"),
    (dict(nms_version="v1", max_detections_per_class=5, max_total_detections=8), "nms_version v1 caps each class"),
])
def test_bad_v1_settings_name_the_setting(settings, message):
    cache, _ = random_case(1, "one_stage")
    with pytest.raises(BadSetting, match=message):
        PostProcessing(**settings).checked(cache)


def test_v1_is_one_stage():
    cache, _ = random_case(1, "two_stage", num_proposals=12)
    with pytest.raises(BadSetting, match="nms_version v1 is swept one-stage"):
        PostProcessing(nms_version="v1").checked(cache)
