"""Checkpoints of a detector: find (`latest_checkpoint`), inspect (`checkpoint_layout`),
restore (`restore_checkpoint`), and rebuild a trained detector from its run directory
(`load_detector`). A checkpoint that does not fit the model raises `CheckpointMismatchError`
naming both."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

from detsearch.models.detector import Detector, build_detector

__all__ = ["CHECKPOINT_DIR", "CheckpointMismatchError", "DETECTOR_FILE", "checkpoint_layout", "latest_checkpoint",
           "load_detector", "restore_checkpoint"]

logger = logging.getLogger(__name__)

DETECTOR_FILE = "detector.json"
"""Written by `detsearch.models.train.train_detector` into its output directory: what
`load_detector` rebuilds."""
CHECKPOINT_DIR = "checkpoints"
"""The run directory's folder of ``ckpt-<step>`` checkpoints."""


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model it is restored into."""


def latest_checkpoint(run_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint prefix written by `detsearch.models.train.train_detector` into ``run_dir``, or None."""
    return tf.train.latest_checkpoint(str(Path(run_dir) / CHECKPOINT_DIR))


def _describe_checkpoint(path: str) -> str:
    meta = Path(path).parent.parent / DETECTOR_FILE
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
            return (f"written by {info.get('model')}/{info.get('preset')} with "
                    f"{len(info.get('category_ids', []))} categories")
        except (OSError, ValueError):
            pass
    return "of unknown origin"


def checkpoint_layout(path: str | os.PathLike) -> tuple[str, ...]:
    """The top-level object names of a TF2 checkpoint: ``("model", ...)`` for `train_detector`'s (and
    Model Garden's trainer) checkpoints, module names such as ``("backbone", "decoder", "head")``
    for Model Garden's published ``init_checkpoint`` files (``tf.train.Checkpoint(
    **model.checkpoint_items)``, or ``backbone`` alone for an ImageNet backbone)."""
    names = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(str(path))}
    return tuple(sorted(names - {"_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"}))


def restore_checkpoint(detector: Detector, path: str | os.PathLike, **extra: Any) -> tuple[str, ...]:
    """Restores a checkpoint into ``detector`` (and into ``extra`` trackables); returns the
    modules restored (``("model",)`` for a whole-model checkpoint).

    Two layouts are read: `train_detector`'s (and Model Garden's trainer's) ``model/...`` checkpoints,
    which must fit the whole model; and Model Garden's published module checkpoints
    (``backbone/...``, ``decoder/...``, ``head/...``: what its tasks' ``initialize`` reads with
    ``init_checkpoint_modules``), of which every module present must fit, while the others keep
    their weights (fine-tuning from an ImageNet backbone restores the backbone only).

    Raises:
      CheckpointMismatchError: the checkpoint lacks some of the model's variables (of the
        modules it holds), holds variables of other shapes, names no module of the model, or is
        unreadable; the message names the checkpoint, what wrote it (from its run's
        ``detector.json``) and the model.
      FileNotFoundError: no checkpoint at ``path``.
    """
    path = str(path)
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"no checkpoint at {path} (expected {path}.index)")
    wanted = f"{detector.name}/{detector.preset.name} with {len(detector.category_ids)} categories"
    try:
        layout = checkpoint_layout(path)
    except (ValueError, tf.errors.OpError) as error:
        raise CheckpointMismatchError(f"checkpoint {path} is unreadable: {str(error).strip()[:300]}") from None
    items = dict(detector.model.checkpoint_items)
    if "model" in layout:
        modules, checkpoint = ("model",), tf.train.Checkpoint(model=detector.model, **extra)
    else:
        modules = tuple(name for name in layout if name in items)
        if not modules:
            raise CheckpointMismatchError(
                f"checkpoint {path} holds {list(layout)}: neither a whole model ('model') nor a module of the model "
                f"{wanted} ({', '.join(sorted(items))})")
        checkpoint = tf.train.Checkpoint(**{name: items[name] for name in modules}, **extra)
    try:
        status = checkpoint.read(path)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        detail = str(error).strip().splitlines()
        detail = detail[0] if detail else type(error).__name__
        raise CheckpointMismatchError(
            f"checkpoint {path} ({_describe_checkpoint(path)}) does not fit the model {wanted}: {detail[:500]}"
        ) from None
    status.expect_partial()
    if modules != ("model",):
        logger.info("restored %s from %s (Model Garden module checkpoint)", ", ".join(modules), path)
    return modules


def load_detector(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> tuple[Detector, str]:
    """Rebuilds the detector `detsearch.models.train.train_detector` wrote into ``run_dir`` and restores a checkpoint.

    Args:
      run_dir: `train_detector`'s output directory (holds ``detector.json`` and ``checkpoints/``).
      checkpoint: a checkpoint prefix; None means the latest in ``run_dir``.
      thresholds: MoXing-named thresholds for the rebuilt model's generators.

    Returns:
      ``(detector, checkpoint_path)``.

    Raises:
      FileNotFoundError: no ``detector.json`` or no checkpoint.
      CheckpointMismatchError: the checkpoint does not fit the rebuilt model.
    """
    run_dir = Path(run_dir)
    meta_path = run_dir / DETECTOR_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {run_dir} is not a tools/train_det.py output directory")
    info = json.loads(meta_path.read_text())
    path = str(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / CHECKPOINT_DIR}")
    detector = build_detector(info["model"], info["preset"], info["category_ids"], info.get("category_names"), thresholds)
    restore_checkpoint(detector, path)
    return detector, path

