"""MoXing-compatible facade: ``import detsearch.moxing as mox``.

Gives ``mox.auto.search``, ``mox.auto.run``, ``mox.auto.ParamSpec``, ``mox.ModelSpec``,
``mox.ExportSpec``, ``mox.ModeKeys``, ``mox.ExportKeys``, ``mox.ModelSize``,
``mox.get_optimizer_fn`` and ``mox.file`` so that a MoXing program runs with only its import
line changed. Importing it does not import TensorFlow.
"""

from detsearch.moxing import auto, file
from detsearch.moxing.optimizers import get_optimizer_fn
from detsearch.moxing.specs import ExportKeys, ExportSpec, ModeKeys, ModelSpec
from detsearch.selector import ModelSize

__all__ = ["auto", "file", "get_optimizer_fn", "ExportKeys", "ExportSpec", "ModeKeys", "ModelSpec", "ModelSize"]
