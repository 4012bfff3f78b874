"""The detector flags ``search-det``, ``train`` and ``cache`` share: which Model Garden
experiment (a shipped demo one by ``--model``, or a registered one by ``--experiment`` with its
YAML overrides), which data, which checkpoint (`detsearch.models.pipeline`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from detsearch.cli.args import BadInput

MODELS = ("retinanet", "ssd", "faster_rcnn")


def add_detector_arguments(parser: argparse.ArgumentParser, *, model_dir_help: str) -> None:
    group = parser.add_argument_group("the detector: a Model Garden experiment")
    group.add_argument("--model", choices=MODELS, default="retinanet",
                       help="the demo detector: retinanet (ssd names it too; retinanet_resnetfpn_coco with "
                            "models/experiments/retinanet_resnet18_demo.yaml) or faster_rcnn "
                            "(fasterrcnn_resnetfpn_coco with fasterrcnn_resnet18_demo.yaml); default retinanet")
    group.add_argument("--experiment", metavar="NAME",
                       help="a registered Model Garden experiment instead, e.g. retinanet_resnetfpn_coco: the model, "
                            "the training and validation TFRecords and the ground truth come from its config")
    group.add_argument("--config-file", metavar="A.yaml[,B.yaml]",
                       help="with --experiment: its YAML overrides, in order (a shipped name such as "
                            "retinanet_resnet18_demo works)")
    group.add_argument("--params-override", metavar="TEXT",
                       help="a last override, e.g. 'task.model.num_classes=11' or 'trainer.train_steps=800'")
    group.add_argument("--model-dir", "--train-run", dest="model_dir", metavar="DIR", help=model_dir_help)
    group.add_argument("--checkpoint", default=None, help="a checkpoint prefix instead of --model-dir's latest")
    group.add_argument("--steps", type=int, default=None,
                       help="training steps when training (trainer.train_steps; default the config's)")
    data = parser.add_argument_group("the demo detector's data (without --experiment)")
    data.add_argument("--dataset", choices=("demo", "coco", "voc"), default="demo",
                      help="demo (built under $DETSEARCH_DATA_DIR/demo), or a COCO or VOC set as the validation "
                           "set (converted once to TFRecords; it is also trained on when there is no checkpoint)")
    data.add_argument("--data-dir", default=None,
                      help="demo: set directory (default data/demo); voc: VOCdevkit year directory or XML directory")
    data.add_argument("--annotations", default=None, help="coco: instances json")
    data.add_argument("--images", default=None, help="coco: image directory; voc: image directory (optional)")
    data.add_argument("--voc-classes", default=None, help="voc: comma-separated class names in id order")
    data.add_argument("--max-images", type=int, default=None,
                      help="use only the first N images (of each split of the demo)")


def experiment_config(args: argparse.Namespace, records_dir: Path):
    """``(experiment name, config)`` of the flags: ``--experiment`` with its overrides, or the
    demo detector of ``--model`` on ``--dataset`` (`detsearch.models.pipeline.demo_config`);
    ``--steps`` sets ``trainer.train_steps``."""
    from official.modeling import hyperparams

    from detsearch.models import pipeline
    from detsearch.models.experiment import load_config

    if args.steps is not None and args.steps < 1:
        raise BadInput(f"--steps must be >= 1, got {args.steps}")
    if args.experiment:
        data_flags = [flag for flag in ("data_dir", "annotations", "images", "voc_classes", "max_images")
                      if getattr(args, flag) is not None]
        if args.dataset != "demo" or data_flags:
            raise BadInput("--experiment reads its data from its config (task.validation_data.input_path, "
                           "task.annotation_file): drop --dataset and its flags")
        files = [f for f in (args.config_file or "").split(",") if f.strip()]
        config = load_config(args.experiment, files, args.params_override)
        if args.steps is not None:
            config = hyperparams.override_params_dict(config, {"trainer": {"train_steps": args.steps}}, is_strict=True)
        return args.experiment, config
    if args.config_file:
        raise BadInput("--config-file needs --experiment (the demo detectors use their shipped overrides)")
    if args.dataset == "demo":
        return pipeline.demo_config(args.model, data_dir=args.data_dir, steps=args.steps,
                                    params_override=args.params_override, max_images=args.max_images)
    from detsearch.datasets.load import load_dataset

    classes = None if args.voc_classes is None else [c.strip() for c in args.voc_classes.split(",") if c.strip()]
    validation = load_dataset(args.dataset, "val", data_dir=args.data_dir, annotations=args.annotations,
                              images=args.images, class_names=classes, max_images=args.max_images)
    return pipeline.demo_config(args.model, validation_set=validation, records_dir=records_dir, steps=args.steps,
                                params_override=args.params_override)
