import pytest

from detsearch.params import ParamSpec


def test_values_and_lists():
    spec = ParamSpec(weight_decay=1e-4, momentum=0.9, learning_rate=0.1)
    assert spec.learning_rate == 0.1 and spec.score_threshold is None
    lists = ParamSpec(weight_decay=[1e-2, 1e-3], momentum=(0.99, 0.9))
    assert lists.candidates("weight_decay") == (1e-2, 1e-3)
    assert spec.candidates("momentum") == (0.9,)
    assert ParamSpec.from_dict(lists.to_dict()) == lists


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(learnig_rate=0.1), ValueError, "unknown parameter 'learnig_rate'"),
    (dict(weight_decay=[]), ValueError, "empty"),
    (dict(learning_rate=0.0), ValueError, "learning_rate must be > 0"),
    (dict(momentum=1.0), ValueError, r"momentum must be in \[0, 1\)"),
    (dict(weight_decay=-1e-4), ValueError, "weight_decay must be >= 0"),
    (dict(score_threshold=1.5), ValueError, r"score_threshold must be in \[0, 1\]"),
    (dict(iou_threshold=[0.5, -0.1]), ValueError, "iou_threshold"),
    (dict(momentum="0.9"), TypeError, "momentum must be a number"),
    (dict(momentum=True), TypeError, "momentum must be a number"),
    (dict(learning_rate=float("nan")), ValueError, "finite"),
])
def test_bad_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        ParamSpec(**kwargs)


def test_immutable_replace():
    spec = ParamSpec(momentum=0.9)
    with pytest.raises(AttributeError):
        spec.momentum = 0.5
    assert spec.replace(momentum=0.5).momentum == 0.5 and spec.momentum == 0.9
    assert "momentum" not in spec.replace(momentum=None)
