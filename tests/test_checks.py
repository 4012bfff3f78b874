"""detsearch.checks: one positive-integer rule and one message, naming the setting."""

from __future__ import annotations

import numpy as np
import pytest

from detsearch.checks import optional_positive_int, positive_int
from detsearch.errors import BadSetting


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(1)])
def test_integers_pass_as_int(value):
    out = positive_int(value, "images_per_shard")
    assert out == value and type(out) is int


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, 2.5, "3", None, np.float64(2.0)])
def test_the_rest_is_a_bad_setting_naming_it(value):
    with pytest.raises(BadSetting) as caught:
        positive_int(value, "images_per_shard")
    assert str(caught.value) == f"images_per_shard must be an integer >= 1, got {value!r}"
    assert isinstance(caught.value, ValueError)


def test_minimum_and_none():
    assert positive_int(0, "seed", minimum=0) == 0
    with pytest.raises(BadSetting, match=r"^image_size must be an integer >= 28, got 27$"):
        positive_int(27, "image_size", minimum=28)
    assert optional_positive_int(None, "num_cpus") is None
    assert optional_positive_int(2, "num_cpus") == 2
    with pytest.raises(BadSetting, match="num_cpus"):
        optional_positive_int(0, "num_cpus")
