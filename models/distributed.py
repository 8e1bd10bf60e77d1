"""Reducing per-example losses in a custom `train_step` that may run under tf.distribute.

Keras' optimizers sum the gradients of all replicas (`_all_reduce_sum_gradients`), so each
replica must contribute its examples' loss summed and divided by the *global* batch: the sum of
the replicas' contributions is then the global batch's mean loss, whatever the number of
replicas and however unevenly the last batch splits (the rule of `tf.nn.compute_average_loss`,
with the global count all-reduced instead of assumed). On one replica this is the plain mean.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops


def global_batch_mean(per_example: tf.Tensor) -> tf.Tensor:
    """This replica's share of the mean of `per_example` [B] over the global batch."""
    if tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return ops.mean(per_example)
    count = tf.cast(tf.shape(per_example)[0], per_example.dtype)
    global_count = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, count
    )
    return tf.math.divide_no_nan(tf.reduce_sum(per_example), global_count)
