"""The word-level Transformer language model of DLwP section 12.1, plus a unigram baseline.

A decoder-only Transformer: token + position embedding, `num_layers` blocks of causal
self-attention and a feed-forward network (post-norm, as in the book), and a dense projection to
vocabulary logits. The book's listing reuses its translation decoder with the input as
"encoder output", whose unmasked cross-attention can see future words; this model has causal
self-attention only, with the heads splitting `embed_dim` (the book gives every head `embed_dim`).

The attention is written out (query/key/value/output projections) so that the same weights serve
two paths: `call` on a whole sequence (training, scoring), and generation (`decoding.py`), which
takes the keys and values of the prompt from `prefill` and then extends that cache one token at a
time with the same weight tensors.

Inputs are right-padded token ids (padding id 0 at the end); causality keeps padding from
affecting earlier positions, and `compile_lm` masks padding targets out of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from models.text.metrics import MaskedAccuracy
from models.text.standardize import PAD_ID

_SERIALIZABLE = "genpipe_text"


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class TokenAndPositionEmbedding(layers.Layer):
    """Sum of a learned token embedding and a learned absolute position embedding."""

    def __init__(self, vocab_size: int, sequence_length: int, embed_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.sequence_length = sequence_length
        self.embed_dim = embed_dim
        self.token_embedding = layers.Embedding(vocab_size, embed_dim, name="token_embedding")
        self.position_embedding = layers.Embedding(
            sequence_length, embed_dim, name="position_embedding"
        )

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.position_embedding.build((self.sequence_length,))
        self.built = True

    def call(self, token_ids):
        positions = tf.range(tf.shape(token_ids)[-1])
        return self.token_embedding(token_ids) + self.position_embedding(positions)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            sequence_length=self.sequence_length,
            embed_dim=self.embed_dim,
        )
        return config


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class CausalSelfAttention(layers.Layer):
    """Multi-head self-attention where position t attends to positions <= t."""

    def __init__(self, num_heads: int, embed_dim: int, **kwargs):
        super().__init__(**kwargs)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.embed_dim = embed_dim
        self.head_dim = embed_dim // num_heads
        self.query = layers.Dense(embed_dim, name="query")
        self.key = layers.Dense(embed_dim, name="key")
        self.value = layers.Dense(embed_dim, name="value")
        self.output_projection = layers.Dense(embed_dim, name="output")

    def build(self, input_shape):
        for projection in (self.query, self.key, self.value, self.output_projection):
            projection.build(input_shape)
        self.built = True

    def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
        """[B, T, D] -> [B, H, T, D/H]."""
        x = tf.reshape(x, [tf.shape(x)[0], -1, self.num_heads, self.head_dim])
        return tf.transpose(x, [0, 2, 1, 3])

    def _attend(self, queries, keys, values, visible) -> tf.Tensor:
        """Scaled dot-product attention; `visible` broadcasts to the scores [B, H, Tq, Tk]."""
        scores = tf.matmul(queries, keys, transpose_b=True) * (self.head_dim**-0.5)
        scores = tf.where(visible, scores, float("-inf"))
        return tf.matmul(tf.nn.softmax(scores), values)

    def call(self, x):
        return self.prefill(x)[0]

    def prefill(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Attends over a whole sequence [B, T, D]; also returns keys and values [B, H, T, D/H]."""
        queries = self._split_heads(self.query(x))
        keys = self._split_heads(self.key(x))
        values = self._split_heads(self.value(x))
        length = tf.shape(x)[1]
        causal = tf.cast(tf.linalg.band_part(tf.ones([length, length]), -1, 0), tf.bool)
        attended = self._attend(queries, keys, values, causal)
        attended = tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), tf.shape(x))
        return self.output_projection(attended), keys, values

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, embed_dim=self.embed_dim)
        return config


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class TransformerDecoderBlock(layers.Layer):
    """Causal self-attention and a ReLU feed-forward network, each with residual + LayerNorm."""

    def __init__(
        self, embed_dim: int, latent_dim: int, num_heads: int, dropout: float = 0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.latent_dim = latent_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention = CausalSelfAttention(num_heads, embed_dim, name="attention")
        self.feed_forward_in = layers.Dense(latent_dim, activation="relu", name="feed_forward_in")
        self.feed_forward_out = layers.Dense(embed_dim, name="feed_forward_out")
        self.attention_norm = layers.LayerNormalization(name="attention_norm")
        self.feed_forward_norm = layers.LayerNormalization(name="feed_forward_norm")
        self.attention_dropout = layers.Dropout(dropout)
        self.feed_forward_dropout = layers.Dropout(dropout)

    def build(self, input_shape):
        self.attention.build(input_shape)
        self.attention_norm.build(input_shape)
        self.feed_forward_in.build(input_shape)
        self.feed_forward_out.build(tuple(input_shape[:-1]) + (self.latent_dim,))
        self.feed_forward_norm.build(input_shape)
        self.built = True

    def _feed_forward(self, x, attended, training=None):
        x = self.attention_norm(x + self.attention_dropout(attended, training=training))
        update = self.feed_forward_out(self.feed_forward_in(x))
        return self.feed_forward_norm(x + self.feed_forward_dropout(update, training=training))

    def call(self, x, training=None):
        return self._feed_forward(x, self.attention(x), training=training)

    def prefill(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Inference on a whole sequence [B, T, D]; also returns the attention keys and values."""
        attended, keys, values = self.attention.prefill(x)
        return self._feed_forward(x, attended, training=False), keys, values

    def get_config(self):
        config = super().get_config()
        config.update(
            embed_dim=self.embed_dim,
            latent_dim=self.latent_dim,
            num_heads=self.num_heads,
            dropout=self.dropout,
        )
        return config


def build_lm(
    vocab_size: int,
    sequence_length: int,
    embed_dim: int,
    latent_dim: int,
    num_heads: int,
    num_layers: int = 1,
    dropout: float = 0.1,
) -> keras.Model:
    """Token ids [B, L] (int32 or int64, L <= sequence_length) -> logits float32 [B, L, V].

    The book's sizes are vocab_size=15000, sequence_length=100, embed_dim=256, latent_dim=2048,
    num_heads=2, one block. `dropout` applies to each residual branch during training.
    """
    token_ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    x = TokenAndPositionEmbedding(vocab_size, sequence_length, embed_dim, name="embedding")(
        token_ids
    )
    for index in range(num_layers):
        x = TransformerDecoderBlock(
            embed_dim, latent_dim, num_heads, dropout, name=f"decoder_{index}"
        )(x)
    logits = layers.Dense(vocab_size, name="logits")(x)
    return keras.Model(token_ids, logits, name="transformer_lm")


def compile_lm(model: keras.Model, learning_rate: float) -> None:
    """RMSprop on cross-entropy from logits; padding targets (id 0) count in neither loss nor
    accuracy (the book's code averages over padding too)."""
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=PAD_ID),
        metrics=[MaskedAccuracy(name="accuracy")],
    )


@keras.saving.register_keras_serializable(package=_SERIALIZABLE)
class UnigramLogits(layers.Layer):
    """The same log-probabilities over the vocabulary at every position (up to the context
    `sequence_length`, kept so that exports know the context like the Transformer's)."""

    def __init__(self, vocab_size: int, sequence_length: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.sequence_length = sequence_length

    def build(self, input_shape):
        self.log_probabilities = self.add_weight(
            shape=(self.vocab_size,),
            initializer="zeros",
            trainable=False,
            name="log_probabilities",
        )
        self.built = True

    def call(self, token_ids):
        shape = tf.concat([tf.shape(token_ids), [self.vocab_size]], axis=0)
        return tf.broadcast_to(tf.convert_to_tensor(self.log_probabilities), shape)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, sequence_length=self.sequence_length)
        return config


def build_unigram_lm(token_counts: Sequence[int] | np.ndarray, sequence_length: int) -> keras.Model:
    """Baseline with the LM's contract: `token_counts[i]` is the training count of token id i;
    logits are log((count + 1) / (total + V)) at every position (add-one smoothing)."""
    counts = np.asarray(token_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or (counts < 0).any():
        raise ValueError("token_counts must be a 1-D list of non-negative counts, one per token id")
    token_ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    unigram = UnigramLogits(counts.size, sequence_length, name="unigram")
    logits = unigram(token_ids)
    unigram.log_probabilities.assign(np.log((counts + 1.0) / (counts.sum() + counts.size)))
    return keras.Model(token_ids, logits, name="unigram_lm")
