"""Building and running a detector changes no process-wide setting: Grappler's options, the
global seeds, the environment. The scopes that replace them (`pinned_box_arithmetic`,
`model_garden_seed`) act inside and are undone after."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

pytest.importorskip("official")

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.eager import context as tf_context

from detsearch.models.detector import build_detector, model_garden_seed, pinned_box_arithmetic

pytestmark = pytest.mark.tf


def thread_rewrite_options():
    config = config_pb2.ConfigProto()
    config.ParseFromString(tf_context.context().function_call_options.config_proto_serialized)
    return config.graph_options.rewrite_options


def batch(detector, size=2):
    side = detector.image_size
    return {"image": np.random.default_rng(0).uniform(0, 255, (size, side, side, 3)).astype(np.float32),
            "original_size": np.array([[side, side], [side // 2, side]] * (size // 2), np.int64),
            "image_id": np.arange(size)}


def test_importing_sets_no_environment_variable():
    assert "TF_USE_LEGACY_KERAS" not in os.environ


def test_pinned_box_arithmetic_acts_inside_only():
    before = tf.config.optimizer.get_experimental_options()
    assert thread_rewrite_options().arithmetic_optimization != rewriter_config_pb2.RewriterConfig.OFF
    with pinned_box_arithmetic():
        assert thread_rewrite_options().arithmetic_optimization == rewriter_config_pb2.RewriterConfig.OFF
        assert tf.config.optimizer.get_experimental_options() == before
    assert thread_rewrite_options().arithmetic_optimization != rewriter_config_pb2.RewriterConfig.OFF
    assert tf.config.optimizer.get_experimental_options() == before


def test_model_garden_seed_restores_the_global_seed():
    tf.random.set_seed(123)
    with model_garden_seed(7):
        assert tf_context.global_seed() == 7
    assert tf_context.global_seed() == 123


def test_building_and_running_a_detector_changes_no_global_setting():
    build_detector("ssd", "tiny", [1, 2], seed=0)  # Model Garden's modules draw from `random` when imported
    options = tf.config.optimizer.get_experimental_options()
    tf.random.set_seed(11)
    numpy_state = np.random.get_state()[1].copy()
    python_state = random.getstate()
    detector = build_detector("ssd", "tiny", [1, 2, 3], seed=0)
    found = detector.predict(batch(detector))
    records = detector.cache_records(batch(detector), 0.01)
    assert len(found) == len(records) == 2
    assert tf.config.optimizer.get_experimental_options() == options
    assert thread_rewrite_options().arithmetic_optimization != rewriter_config_pb2.RewriterConfig.OFF
    assert tf_context.global_seed() == 11
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    assert random.getstate() == python_state


def test_a_build_is_repeatable_from_its_seed():
    first = build_detector("ssd", "tiny", [1, 2, 3], seed=4)
    tf.random.set_seed(99)  # the process's seed does not reach the build
    second = build_detector("ssd", "tiny", [1, 2, 3], seed=4)
    other = build_detector("ssd", "tiny", [1, 2, 3], seed=5)
    for a, b in zip(first.model.variables, second.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first.model.variables, other.model.variables))
