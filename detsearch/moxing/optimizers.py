"""`mox.get_optimizer_fn`: optimizer factories by name (TF1 `tf.compat.v1.train` optimizers)."""

from __future__ import annotations

from typing import Any, Callable

OPTIMIZERS = ("momentum", "sgd", "adam", "rmsprop", "adagrad")


def get_optimizer_fn(name: str, learning_rate: Any, **kwargs: Any) -> Callable[[], Any]:
    """Returns a function that builds the named optimizer.

    Args:
      name: one of `OPTIMIZERS`.
      learning_rate: float or scalar tensor (during a search, the per-step schedule).
      **kwargs: passed to the optimizer (``momentum=`` for ``'momentum'``, which is required).

    Raises:
      ValueError: unknown name, or ``'momentum'`` without a momentum value.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    if name == "momentum" and kwargs.get("momentum") is None:
        raise ValueError("optimizer 'momentum' needs momentum= (param_spec.momentum is None)")

    def build():
        import tensorflow as tf

        train = tf.compat.v1.train
        if name == "momentum":
            return train.MomentumOptimizer(learning_rate, **kwargs)
        if name == "sgd":
            return train.GradientDescentOptimizer(learning_rate, **kwargs)
        if name == "adam":
            return train.AdamOptimizer(learning_rate, **kwargs)
        if name == "rmsprop":
            return train.RMSPropOptimizer(learning_rate, **kwargs)
        return train.AdagradOptimizer(learning_rate, **kwargs)

    return build
