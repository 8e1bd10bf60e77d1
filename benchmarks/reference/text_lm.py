"""The chapter's Transformer LM (DLwP 12.1): positional embedding, one decoder block, a dense
projection to the vocabulary, RMSprop on sparse cross-entropy.

The block keeps the chapter's layout: causal self-attention, a second attention whose keys and
values are the block's input (the listing calls the decoder with the input as its own "encoder
output"), a ReLU projection, each followed by a residual connection and LayerNorm, every head
with `key_dim = embed_dim`. One change: the second attention is causal too. Unmasked, as in the
listing, it lets each position read the word it must predict, so the reference's held-out
perplexity would measure copying, not language modelling. The output layer gives logits (the
listing's softmax folded into the loss), which is what the shared perplexity code reads; padding
targets are left out of the loss, as the listing's `mask_zero` embedding does.
"""

from __future__ import annotations

import keras
from keras import layers, ops


class PositionalEmbedding(layers.Layer):
    """Token embedding plus a learned embedding of each position."""

    def __init__(self, sequence_length: int, vocab_size: int, embed_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.token_embeddings = layers.Embedding(vocab_size, embed_dim)
        self.position_embeddings = layers.Embedding(sequence_length, embed_dim)

    def call(self, inputs):
        positions = ops.arange(ops.shape(inputs)[-1])
        return self.token_embeddings(inputs) + self.position_embeddings(positions)


class TransformerDecoder(layers.Layer):
    """The chapter's decoder block, with both attentions causal (see the module docstring)."""

    def __init__(self, embed_dim: int, dense_dim: int, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.attention_1 = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.attention_2 = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.dense_proj = keras.Sequential(
            [layers.Dense(dense_dim, activation="relu"), layers.Dense(embed_dim)]
        )
        self.layernorm_1 = layers.LayerNormalization()
        self.layernorm_2 = layers.LayerNormalization()
        self.layernorm_3 = layers.LayerNormalization()

    def call(self, inputs, encoder_outputs):
        attended = self.attention_1(inputs, inputs, use_causal_mask=True)
        attended = self.layernorm_1(inputs + attended)
        attended_2 = self.attention_2(attended, encoder_outputs, use_causal_mask=True)
        attended_2 = self.layernorm_2(attended + attended_2)
        return self.layernorm_3(attended_2 + self.dense_proj(attended_2))


def build_reference_lm(
    vocab_size: int, sequence_length: int, embed_dim: int, latent_dim: int, num_heads: int,
    learning_rate: float,
) -> keras.Model:
    """Token ids [B, L] -> logits [B, L, V], compiled as the chapter compiles it."""
    inputs = keras.Input(shape=(None,), dtype="int64")
    x = PositionalEmbedding(sequence_length, vocab_size, embed_dim)(inputs)
    x = TransformerDecoder(embed_dim, latent_dim, num_heads)(x, x)
    logits = layers.Dense(vocab_size)(x)
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    return model
