"""MNIST classifiers as MoXing programs (graph mode): the seed's softmax regression, a 2-layer MLP
and a small CNN.

``make_program(mnist, model)`` returns ``(input_fn, model_fn, optimizer_fn)`` in the seed's
style. ``input_fn(TRAIN)`` streams ``mnist.train.next_batch``; ``input_fn(EVAL)`` walks the test
split in order (so an evaluation of ``10000 / batch_size`` batches is exactly the test set).
"""

from __future__ import annotations

import tensorflow as tf

import detsearch.moxing as mox

v1 = tf.compat.v1
MODELS = ("softmax", "mlp", "cnn")
MLP_HIDDEN = 256


def make_program(mnist, model: str = "softmax", batch_size: int = 50):
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")

    def input_fn(run_mode, **kwargs):
        if run_mode == mox.ModeKeys.TRAIN:
            def batches():
                while True:
                    yield mnist.train.next_batch(batch_size)
        else:
            def batches():
                images, labels = mnist.test.images, mnist.test.labels
                while True:
                    for start in range(0, len(images) - batch_size + 1, batch_size):
                        yield images[start:start + batch_size], labels[start:start + batch_size]
        ds = v1.data.Dataset.from_generator(
            batches, output_types=(tf.float32, tf.float32),
            output_shapes=(tf.TensorShape([None, 784]), tf.TensorShape([None, 10])))
        return v1.data.make_one_shot_iterator(ds).get_next()

    def softmax(x):
        w = v1.get_variable("W", initializer=tf.zeros([784, 10]))
        b = v1.get_variable("b", initializer=tf.zeros([10]))
        return tf.matmul(x, w) + b

    def mlp(x):
        net = x
        for i, (inputs, outputs) in enumerate(((784, MLP_HIDDEN), (MLP_HIDDEN, 10))):
            kernel = v1.get_variable(f"dense{i}/kernel", [inputs, outputs], initializer=v1.glorot_uniform_initializer())
            bias = v1.get_variable(f"dense{i}/bias", [outputs], initializer=v1.zeros_initializer())
            net = tf.matmul(net, kernel) + bias
            if i == 0:
                net = tf.nn.relu(net)
        return net

    def cnn(x):
        net = tf.reshape(x, [-1, 28, 28, 1])
        for i, filters in enumerate((16, 32)):
            kernel = v1.get_variable(f"conv{i}/kernel", [3, 3, net.shape[-1], filters],
                                     initializer=v1.glorot_uniform_initializer())
            bias = v1.get_variable(f"conv{i}/bias", [filters], initializer=v1.zeros_initializer())
            net = tf.nn.relu(tf.nn.conv2d(net, kernel, 1, "SAME") + bias)
            net = tf.nn.max_pool2d(net, 2, 2, "VALID")
        net = tf.reshape(net, [-1, 7 * 7 * 32])
        kernel = v1.get_variable("dense/kernel", [7 * 7 * 32, 10], initializer=v1.glorot_uniform_initializer())
        bias = v1.get_variable("dense/bias", [10], initializer=v1.zeros_initializer())
        return tf.matmul(net, kernel) + bias

    network = {"softmax": softmax, "mlp": mlp, "cnn": cnn}[model]

    def model_fn(inputs, run_mode, **kwargs):
        x, y_ = inputs
        y = network(x)
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=tf.stop_gradient(y_), logits=y))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(y, 1), tf.argmax(y_, 1)), tf.float32))
        export_spec = mox.ExportSpec(inputs_dict={"images": x}, outputs_dict={"logits": y}, version="model")
        return mox.ModelSpec(loss=loss, log_info={"loss": loss, "accuracy": accuracy}, export_spec=export_spec)

    def optimizer_fn(**kwargs):
        param_spec = kwargs["param_spec"]
        return mox.get_optimizer_fn(name="momentum", learning_rate=param_spec.learning_rate,
                                    momentum=param_spec.momentum)()

    return input_fn, model_fn, optimizer_fn
