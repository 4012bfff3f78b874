"""MoXing's spec objects: what a model_fn returns and how a model is exported. No TensorFlow."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class ModeKeys:
    """The run_mode passed to input_fn and model_fn."""

    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "predict"
    EXPORT = "export"


class ExportKeys:
    """Export formats of `mox.auto.run` (``export_model=``)."""

    TF_SERVING = "tf_serving"


@dataclasses.dataclass
class ExportSpec:
    """What to export: named input and output tensors of the model.

    Attributes:
      inputs_dict: name -> input tensor (for example ``{'images': x}``).
      outputs_dict: name -> output tensor (for example ``{'logits': y}``).
      version: name of the SavedModel directory under ``log_dir`` (MoXing's ``'model'``).
    """

    inputs_dict: Mapping[str, Any] | None = None
    outputs_dict: Mapping[str, Any] | None = None
    version: str = "model"


@dataclasses.dataclass
class ModelSpec:
    """What a model_fn returns.

    Attributes:
      loss: scalar tensor minimised in training (the framework adds weight decay to it).
      log_info: name -> scalar tensor; logged, written to TensorBoard, and the metrics a search
        judges by (``acc_name`` / ``loss_name`` must be keys here).
      export_spec: optional `ExportSpec`.
    """

    loss: Any = None
    log_info: Mapping[str, Any] | None = None
    export_spec: ExportSpec | None = None
