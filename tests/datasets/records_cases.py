"""A dataset as Model Garden reads it back: `write_records`' TFRecords through Model Garden's own
decoder, shared by the reader tests and the pipeline's tests."""

from __future__ import annotations

import numpy as np


def decoded_records(records) -> dict:
    """Every record of ``records`` (a `detsearch.models.pipeline.Records`) through Model Garden's
    ``TfExampleDecoder``: ``{image id: decoded dict}``."""
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder()
    files = sorted(tf.io.gfile.glob(records.pattern))
    return {int(d["source_id"]): d for d in (decoder.decode(raw) for raw in tf.data.TFRecordDataset(files))}


def assert_records_hold(dataset, decoded: dict) -> None:
    """Each example of ``dataset`` is in ``decoded`` with its size (uint8 RGB pixels), boxes
    (normalized by the converter, to 1e-5), classes and crowd flags."""
    assert sorted(decoded) == sorted(example.image_id for example in dataset.examples)
    for example in dataset.examples:
        d = decoded[example.image_id]
        image = d["image"].numpy()
        assert image.shape == (example.height, example.width, 3) and image.dtype == np.uint8
        assert (int(d["height"]), int(d["width"])) == (example.height, example.width)
        scale = np.array([example.height, example.width] * 2, np.float64)
        np.testing.assert_allclose(d["groundtruth_boxes"].numpy() * scale, example.boxes, rtol=1e-5)
        np.testing.assert_array_equal(d["groundtruth_classes"].numpy(), example.classes)
        np.testing.assert_array_equal(d["groundtruth_is_crowd"].numpy(), example.is_crowd)
