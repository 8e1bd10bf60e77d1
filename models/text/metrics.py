"""Padding-aware accuracy, negative log-likelihood and perplexity for language models."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from models.text.standardize import PAD_ID


@keras.saving.register_keras_serializable(package="genpipe_text")
class MaskedAccuracy(keras.metrics.Metric):
    """Next-token accuracy over non-padding targets (target id != PAD_ID)."""

    def __init__(self, name: str = "masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int64)
        counted = tf.cast(y_true != PAD_ID, tf.float32)
        if sample_weight is not None:
            counted *= tf.cast(sample_weight, tf.float32)
        hits = tf.cast(tf.argmax(y_pred, axis=-1) == y_true, tf.float32)
        self.correct.assign_add(tf.reduce_sum(hits * counted))
        self.count.assign_add(tf.reduce_sum(counted))

    def result(self):
        return tf.math.divide_no_nan(self.correct, self.count)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)


def _batch_nll(model: keras.Model):
    @tf.function(reduce_retracing=True)
    def nll(inputs, targets):
        log_probs = tf.nn.log_softmax(tf.cast(model(inputs, training=False), tf.float32))
        targets = tf.cast(targets, tf.int64)
        target_log_probs = tf.gather(log_probs, tf.maximum(targets, 0), batch_dims=2)
        counted = targets != PAD_ID
        return (
            -tf.reduce_sum(tf.where(counted, tf.cast(target_log_probs, tf.float64), 0.0)),
            tf.reduce_sum(tf.cast(counted, tf.int64)),
        )

    return nll


def masked_nll(model: keras.Model, dataset: tf.data.Dataset) -> tuple[float, int]:
    """Total negative log-likelihood (nats) and number of non-padding targets over a dataset of
    `(inputs, targets)` batches of token ids [B, L]."""
    nll_of = _batch_nll(model)
    total, count = 0.0, 0
    for inputs, targets in dataset:
        batch_nll, batch_count = nll_of(inputs, targets)
        total += float(batch_nll)
        count += int(batch_count)
    return total, count


def perplexity(model: keras.Model, dataset: tf.data.Dataset) -> float:
    """exp(mean negative log-likelihood per non-padding target token)."""
    total, count = masked_nll(model, dataset)
    if count == 0:
        raise ValueError("the dataset has no non-padding target tokens")
    return math.exp(total / count)
