"""detsearch.errors: the extras' messages and lookups (no extra needs to be absent: a missing
module is simulated by ``sys.modules[name] = None``)."""

from __future__ import annotations

import sys

import pytest

from detsearch.errors import EXTRA_MODULES, BadSetting, MissingExtra, extra_of, require_extra


def test_missing_extra_message():
    error = MissingExtra("search-det", "tf")
    assert str(error) == "search-det needs the tf extra: pip install 'detsearch[tf]'"
    assert isinstance(error, ImportError) and (error.feature, error.extra) == ("search-det", "tf")
    assert issubclass(BadSetting, ValueError)


@pytest.mark.parametrize("extra", sorted(EXTRA_MODULES))
def test_require_extra_names_the_extra_of_any_missing_module(extra, monkeypatch):
    for module in EXTRA_MODULES[extra]:
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)
            with pytest.raises(MissingExtra, match=rf"^feature needs the {extra} extra: pip install 'detsearch\[{extra}\]'$"):
                require_extra(extra, "feature")


def test_require_extra_checks_only_the_modules_named(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "tensorflow" else object())
    require_extra("tf", "prepare-demo", ("cv2",))
    with pytest.raises(MissingExtra):
        require_extra("tf", "prepare-demo", ("cv2", "tensorflow"))
    with pytest.raises(ValueError, match="'numpy' is not a module of the tf extra"):
        require_extra("tf", "x", ("numpy",))


def test_require_extra_imports_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    require_extra("plots", "sweep")
    assert "matplotlib" not in sys.modules


@pytest.mark.parametrize("module, preferred, extra", [
    ("matplotlib", (), "plots"),
    ("matplotlib.backends.backend_agg", (), "plots"),
    ("pycocotools.coco", (), "coco"),  # in coco and tf: the smaller extra
    ("pycocotools", ("tf", "plots"), "tf"),  # the command's own extra first
    ("official.vision", (), "tf"),
    ("ray", ("tf",), "ray"),
    ("numpy", (), None),
    ("", (), None),
])
def test_extra_of(module, preferred, extra):
    assert extra_of(module, preferred) == extra
