"""Caching a Model Garden experiment's validation set vs plain Model Garden inference.

    python tools/bench_experiment.py --experiment retinanet_resnetfpn_coco --config-file retinanet_resnet18_demo \\
        --model-dir runs/retinanet_demo

The validation batches come through the task's own pipeline once and are kept in memory, so
neither side pays for input; every function is called once before timing (tracing excluded).
In one run:

- plain inference: the model with its post-processing, ``nms_version: batched`` and ``v2``;
- caching: `detsearch.models.experiment.Recorder.add` (the decoded boxes and scores before NMS,
  mapped back to the original image, per-image rows and entries) and `Recorder.cache` (the
  `DetectionCache` and the ground truth).

Prints ms per image and the ratio (target: caching costs at most 1.5x plain inference).
"""

from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--config-file", default="", help="comma-separated YAML overrides (paths or shipped names)")
    parser.add_argument("--params-override", default=None)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--score-floor", type=float, default=0.01)
    args = parser.parse_args()

    import tensorflow as tf
    from official.modeling import hyperparams

    from detsearch.models import experiment as garden

    files = [f for f in args.config_file.split(",") if f.strip()]
    experiment = garden.load_experiment(args.experiment, files, args.params_override, model_dir=args.model_dir)
    recorder = garden.Recorder(experiment, args.score_floor)
    batches = list(experiment.batches(recorder.task))
    images = sum(int(batch[0].shape[0]) for batch in batches)

    def plain(nms_version: str) -> float:
        config = hyperparams.override_params_dict(
            copy.deepcopy(experiment.config), {"task": {"model": {"detection_generator": {"nms_version": nms_version}}}},
            is_strict=True)
        _, model = garden.Experiment(experiment.name, config, experiment.kind, experiment.checkpoint).build()
        call = tf.function(lambda x, a, s: model(x, anchor_boxes=a, image_shape=s, training=False)["num_detections"],
                           autograph=False, reduce_retracing=True)
        for x, labels in batches[:1]:
            call(x, labels["anchor_boxes"], labels["image_info"][:, 1, :]).numpy()
        started = time.perf_counter()
        for x, labels in batches:
            call(x, labels["anchor_boxes"], labels["image_info"][:, 1, :]).numpy()
        return (time.perf_counter() - started) / images

    batched, v2 = plain("batched"), plain("v2")
    recorder.trace(*batches[0])
    started = time.perf_counter()
    for batch in batches:
        recorder.add(*batch)
    added = (time.perf_counter() - started) / images
    started = time.perf_counter()
    cache, _ = recorder.cache()
    built = (time.perf_counter() - started) / images
    caching = added + built
    print(f"{experiment.name}, {images} images, {cache}")
    print("| work | ms / image | caching / this |\n|---|---:|---:|")
    print(f"| plain inference, batched NMS | {1000 * batched:.2f} | {caching / batched:.2f}x |")
    print(f"| plain inference, v2 NMS | {1000 * v2:.2f} | {caching / v2:.2f}x |")
    print(f"| caching: forward and rows (Recorder.add) | {1000 * added:.2f} | |")
    print(f"| caching: the cache (Recorder.cache) | {1000 * built:.2f} | |")
    print(f"| caching, in all | {1000 * caching:.2f} | target <= 1.5x batched |")


if __name__ == "__main__":
    main()
