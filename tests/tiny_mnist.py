"""Digit-like data with MNIST's shapes (784 pixels, one-hot of 10), seeded: what
`detsearch.models.mnist.make_program` reads (``train.next_batch``, ``test.images/labels``)."""

import numpy as np


class Split:
    def __init__(self, images, labels):
        self.images, self.labels, self._next = images, labels, 0

    def next_batch(self, batch_size):
        start = self._next
        self._next = (start + batch_size) % (len(self.images) - batch_size + 1)
        return self.images[start:start + batch_size], self.labels[start:start + batch_size]


class TinyMnist:
    def __init__(self, seed=0, examples=1200, train=1000):
        rng = np.random.default_rng(seed)
        centers = rng.uniform(0, 1, (10, 784)).astype(np.float32)
        labels = rng.integers(0, 10, examples)
        images = np.clip(centers[labels] + rng.normal(0, 0.3, (examples, 784)), 0, 1).astype(np.float32)
        one_hot = np.eye(10, dtype=np.float32)[labels]
        self.train = Split(images[:train], one_hot[:train])
        self.test = Split(images[train:], one_hot[train:])
