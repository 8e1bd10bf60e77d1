"""Key/value-cache decoding: the prompt once (`prefill`), then one token per step.

`TransformerDecoding.step` runs a `build_lm` model one position at a time from the model's own
weights (`read_weights`) instead of calling its Keras layers. The layers are written for whole
sequences, and `MultiHeadAttention` takes no external cache: called per step they would re-run
every earlier position (the chapter's loop, O(T^2) per word). Reading the weights once per
call, fusing the query/key/value projections into one matmul and attending one query over the
cache keeps the loop body to the per-token math. Because this restates the block's math, two
tests guard that it equals the Keras layers: `test_cached_greedy_equals_full_recompute` and
`test_cached_sampling_equals_full_recompute_with_same_randomness` (tests/test_text_model.py)
compare the cached loop with re-running the whole model on the whole sequence for every word.

`generate_tokens` is the decoding loop of the `generate` signature, a `tf.while_loop` over a
whole batch (`decode_steps`, run by `sample_steps`, which the word-by-word signatures of
`stepwise.py` share); `token_chooser` is its step rule. Examples with a longer prompt are fed
their remaining prompt words through the same steps before they start sampling, so every
example is at the same position at every step. Padding and [UNK] are never generated.

The loop body is kept to few, large ops (a step at B=1 is bound by reading the weights, and
every extra op or tf.cond in the body costs a fixed few microseconds): everything that does not
change between steps is computed once per call (the weights as tensors, the query scale folded
into the query projection, which rows are in their prompt and their uniform numbers, whether
any row filters by top-k/top-p: two loops and one branch per call instead of a branch a step).
What each change measured is in docs/benchmarks.md ("Text generation").
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from models.text.lm import TokenAndPositionEmbedding, TransformerDecoderBlock, UnigramLogits
from models.text.samplers import make_sampler, needs_filtering
from models.text.standardize import PAD_ID, UNK_ID

# Tokens `generate` never emits: padding, and [UNK] (it carries no word a reader could use).
NEVER_GENERATED = (PAD_ID, UNK_ID)

# The feed-forward network of a step runs as this many independent halves of its latent units
# (matmul, ReLU, matmul each, summed), which TensorFlow runs side by side: 2 parts made B=1
# steps about 15% faster on 2 cores (a [1, 256] x [256, 2048] matmul alone leaves a core idle);
# 4 parts were no faster (docs/benchmarks.md, "Text generation").
FEED_FORWARD_PARTS = 2


class TransformerDecoding:
    """Incremental inference with the weights of a `build_lm` model.

    `prefill` runs the model's layers on the shared prompt prefix and keeps their keys and
    values. `step` then feeds one token per example with the same weights, read once per call
    by `read_weights` (outside the loop, so the loop body holds only the per-token math, with
    the query/key/value projections fused into one matmul). The cache is a list
    [keys_0, values_0, keys_1, ...] of [B, H, T, D/H] tensors holding the T positions fed so
    far; each step appends one position (a concat copies O(T), like the attention reads:
    3x faster at B=32 than rewriting a fixed-capacity buffer with a one-hot mask, and no slower
    than writing one row of a preallocated buffer with tensor_scatter_nd_update).
    """

    def __init__(self, model: keras.Model):
        (self.embedding,) = [x for x in model.layers if isinstance(x, TokenAndPositionEmbedding)]
        self.blocks = [x for x in model.layers if isinstance(x, TransformerDecoderBlock)]
        self.logits = model.get_layer("logits")
        self.sequence_length = self.embedding.sequence_length
        self.vocab_size = self.embedding.vocab_size

    def prefill(self, token_ids: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Feeds token ids [B, T]; returns the logits [B, V] at position T-1 and the cache."""
        x = self.embedding(token_ids)
        cache = []
        for block in self.blocks:
            x, keys, values = block.prefill(x)
            cache += [keys, values]
        return self.logits(x[:, -1]), cache

    def read_weights(self, banned_tokens: tuple[int, ...] = ()) -> dict:
        """The current weight values as tensors, for `step`; `banned_tokens` get logit -inf."""

        def value(variable):
            return tf.convert_to_tensor(variable)

        def norm(layer):
            return value(layer.gamma), value(layer.beta), layer.epsilon

        blocks = []
        for block in self.blocks:
            attention = block.attention
            projections = (attention.query, attention.key, attention.value)
            # The attention's 1/sqrt(head_dim) is folded into the query projection.
            scales = (attention.head_dim**-0.5, 1.0, 1.0)
            pairs = list(zip(projections, scales, strict=True))
            parts = FEED_FORWARD_PARTS if block.latent_dim % FEED_FORWARD_PARTS == 0 else 1
            blocks.append(
                {
                    "qkv": (
                        tf.concat([value(p.kernel) * scale for p, scale in pairs], axis=1),
                        tf.concat([value(p.bias) * scale for p, scale in pairs], axis=0),
                    ),
                    "output": (
                        value(attention.output_projection.kernel),
                        value(attention.output_projection.bias),
                    ),
                    "attention_norm": norm(block.attention_norm),
                    "feed_forward_in": list(
                        zip(
                            tf.split(value(block.feed_forward_in.kernel), parts, axis=1),
                            tf.split(value(block.feed_forward_in.bias), parts, axis=0),
                            strict=True,
                        )
                    ),
                    "feed_forward_out": (
                        tf.split(value(block.feed_forward_out.kernel), parts, axis=0),
                        value(block.feed_forward_out.bias),
                    ),
                    "feed_forward_norm": norm(block.feed_forward_norm),
                    "num_heads": attention.num_heads,
                    "head_dim": attention.head_dim,
                }
            )
        return {
            "tokens": value(self.embedding.token_embedding.embeddings),
            "positions": value(self.embedding.position_embedding.embeddings),
            "blocks": blocks,
            "logits": (value(self.logits.kernel), _ban(value(self.logits.bias), banned_tokens)),
        }

    @property
    def cache_shape(self) -> tuple[int, int, int]:
        """(layers, heads, head_dim): the cache holds keys and values [B, H, T, D/H] a layer."""
        attention = self.blocks[0].attention
        return len(self.blocks), attention.num_heads, attention.head_dim

    def stack_cache(self, cache: list[tf.Tensor], batch, length) -> tuple[tf.Tensor, tf.Tensor]:
        """The cache list as keys and values [B, layers, H, T, D/H] (explicit serving tensors)."""
        return tf.stack(cache[0::2], axis=1), tf.stack(cache[1::2], axis=1)

    def unstack_cache(self, keys: tf.Tensor, values: tf.Tensor) -> list[tf.Tensor]:
        """The inverse of `stack_cache`."""
        layers = self.cache_shape[0]
        keys, values = tf.unstack(keys, layers, axis=1), tf.unstack(values, layers, axis=1)
        return [tensor for pair in zip(keys, values, strict=True) for tensor in pair]

    def step(self, weights, token_ids, position, cache) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Feeds one token per example [B] at `position` (shared by the batch); returns the
        logits [B, V] and the cache with that position filled."""
        x = tf.gather(weights["tokens"], token_ids) + tf.gather(weights["positions"], position)
        new_cache = []
        for index, block in enumerate(weights["blocks"]):
            keys, values = cache[2 * index], cache[2 * index + 1]
            heads, head_dim = block["num_heads"], block["head_dim"]
            qkv = tf.reshape(_dense(x, block["qkv"]), [-1, 3, heads, 1, head_dim])
            queries, new_keys, new_values = tf.unstack(qkv, axis=1)  # [B, H, 1, D/H]
            keys = tf.concat([keys, new_keys], axis=2)
            values = tf.concat([values, new_values], axis=2)
            attended = _attend_one_query(queries, keys, values)
            attended = tf.reshape(attended, [-1, heads * head_dim])
            x = _layer_norm(x + _dense(attended, block["output"]), block["attention_norm"])
            out_kernels, out_bias = block["feed_forward_out"]
            update = tf.add_n(
                [
                    tf.matmul(tf.nn.relu(_dense(x, part_in)), part_out)
                    for part_in, part_out in zip(block["feed_forward_in"], out_kernels, strict=True)
                ]
            )
            x = _layer_norm(x + tf.nn.bias_add(update, out_bias), block["feed_forward_norm"])
            new_cache += [keys, values]
        return _dense(x, weights["logits"]), new_cache


def _ban(logit_bias: tf.Tensor, tokens: tuple[int, ...] = ()) -> tf.Tensor:
    """Adds -inf to some tokens' logit bias (so that they are never chosen)."""
    for token in tokens:
        logit_bias = logit_bias + tf.one_hot(token, logit_bias.shape[0], float("-inf"), 0.0)
    return logit_bias


def _dense(x: tf.Tensor, kernel_and_bias: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
    kernel, bias = kernel_and_bias
    return tf.nn.bias_add(tf.matmul(x, kernel), bias)


def _attend_one_query(queries, keys, values) -> tf.Tensor:
    """Attention of one query per example and head: queries [B, H, 1, d] over the caches
    [B, H, T, d] -> [B, H, d]; the queries come scaled by 1/sqrt(d) (`read_weights`).

    For small batches, multiply-and-sum: the oneDNN BatchMatMul and Softmax kernels cost a fixed
    ~30 us a call, which doubles the attention time at B=1; from B=5, BatchMatMul is faster.
    """
    def multiply_and_sum():
        scores = tf.reduce_sum(queries * keys, axis=-1)
        weights = tf.exp(scores - tf.reduce_max(scores, axis=-1, keepdims=True))
        attention = weights / tf.reduce_sum(weights, axis=-1, keepdims=True)  # [B, H, T]
        return tf.reduce_sum(attention[..., None] * values, axis=-2)

    def batch_matmul():
        scores = tf.matmul(queries, keys, transpose_b=True)  # [B, H, 1, T]
        attention = tf.nn.softmax(scores)
        return tf.matmul(attention, values)[:, :, 0]

    return tf.cond(tf.shape(queries)[0] <= 4, multiply_and_sum, batch_matmul)


def _layer_norm(x: tf.Tensor, gamma_beta_epsilon: tuple) -> tf.Tensor:
    gamma, beta, epsilon = gamma_beta_epsilon
    centered = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    variance = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
    return centered * (tf.math.rsqrt(variance + epsilon) * gamma) + beta


class UnigramDecoding:
    """The unigram baseline behind the same interface (no cache needed)."""

    def __init__(self, model: keras.Model):
        (self.unigram,) = [x for x in model.layers if isinstance(x, UnigramLogits)]
        self.sequence_length = self.unigram.sequence_length
        self.vocab_size = self.unigram.vocab_size

    cache_shape = (0, 1, 1)  # no layers: keys and values [B, 0, 1, T, 1]

    def stack_cache(self, cache, batch, length) -> tuple[tf.Tensor, tf.Tensor]:
        empty = tf.zeros([batch, 0, 1, length, 1])
        return empty, empty

    def unstack_cache(self, keys, values) -> list[tf.Tensor]:
        return []

    def read_weights(self, banned_tokens: tuple[int, ...] = ()) -> tf.Tensor:
        return _ban(tf.convert_to_tensor(self.unigram.log_probabilities), banned_tokens)

    def prefill(self, token_ids):
        return self.step(self.read_weights(), token_ids[:, 0], 0, [])

    def step(self, weights, token_ids, position, cache):
        return tf.broadcast_to(weights, [tf.shape(token_ids)[0], self.vocab_size]), cache


def cached_decoding(model: keras.Model) -> TransformerDecoding | UnigramDecoding:
    """The incremental decoder for a model from `build_lm` or `build_unigram_lm`."""
    if any(isinstance(x, TokenAndPositionEmbedding) for x in model.layers):
        return TransformerDecoding(model)
    if any(isinstance(x, UnigramLogits) for x in model.layers):
        return UnigramDecoding(model)
    raise ValueError("expected a model built by build_lm or build_unigram_lm")


def token_chooser(
    next_token: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    prompt_ids: tf.Tensor,
    prompt_lengths: tf.Tensor,
    uniforms: tf.Tensor,
    length: int,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Returns token_at(position, logits [B, V]) -> the tokens [B] at `position` < `length`:
    the prompt's where a row is still in its prompt, otherwise the one `next_token` samples
    with the row's uniform number of that index of the continuation.

    Which rows are in their prompt and which uniform number each position uses are tables
    [length, B] made here once, so that a step reads one row of each.
    """
    positions = tf.range(length)
    in_prompt = positions[:, None] < prompt_lengths[None, :]  # [length, B]
    last_prompt_column = tf.shape(prompt_ids)[1] - 1
    from_prompt = tf.gather(tf.transpose(prompt_ids), tf.minimum(positions, last_prompt_column))
    forced = tf.where(in_prompt, from_prompt, -1)
    generated = tf.clip_by_value(
        positions[None, :] - prompt_lengths[:, None], 0, tf.shape(uniforms)[1] - 1
    )
    uniform = tf.transpose(tf.gather(uniforms, generated, batch_dims=1))  # [length, B]

    def token_at(position: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        forced_token = tf.gather(forced, position)
        sampled = next_token(logits, tf.gather(uniform, position))
        return tf.where(forced_token >= 0, forced_token, sampled)

    return token_at


def prefill_banned(decoder, prompt_ids: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """`decoder.prefill` with the never-generated tokens' logits at -inf (as `step` has them)."""
    logits, cache = decoder.prefill(prompt_ids)
    return logits + _ban(tf.zeros([decoder.vocab_size]), NEVER_GENERATED), cache


def decode_steps(
    decoder: TransformerDecoding | UnigramDecoding,
    weights,
    token_at: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    position: tf.Tensor,
    token: tf.Tensor,
    cache: list[tf.Tensor],
    last: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor], tf.Tensor]:
    """The decoding loop: feeds `token` [B] at `position`, then each token `token_at` chooses,
    until the token at position `last` is chosen (none when last <= position).

    Returns the final position, its token, the cache and the tokens [last - position + 1, B]
    at positions position..last (the given token first).
    """
    last = tf.maximum(last, position)
    tokens = tf.TensorArray(tf.int32, size=last - position + 1).write(0, token)

    def body(at, token, cache, tokens):
        logits, cache = decoder.step(weights, token, at, cache)
        token = token_at(at + 1, logits)
        return at + 1, token, cache, tokens.write(at + 1 - position, token)

    growing = [tf.TensorShape([None, c.shape[1], None, c.shape[3]]) for c in cache]
    position, token, cache, tokens = tf.while_loop(
        lambda at, *_: at < last,
        body,
        (position, token, cache, tokens),
        shape_invariants=(position.shape, token.shape, growing, tf.TensorShape(None)),
        parallel_iterations=1,
    )
    return position, token, cache, tokens.stack()


def sample_steps(
    decoder: TransformerDecoding | UnigramDecoding,
    settings: tuple[tf.Tensor, tf.Tensor, tf.Tensor],
    prompt_ids: tf.Tensor,
    prompt_lengths: tf.Tensor,
    uniforms: tf.Tensor,
    position: tf.Tensor,
    cache: list[tf.Tensor],
    last: tf.Tensor,
    *,
    token: tf.Tensor | None = None,
    logits: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor], tf.Tensor]:
    """`decode_steps` from the `token` [B] at `position`, or from the token chosen there from
    `logits` [B, V], to `last`, with the samplers of `settings` (temperature, top_k, top_p [B]).

    There are two loops, one with the top-k/top-p filter and one without, and one branch per
    call on whether some row filters (not one per step).
    """
    weights = decoder.read_weights(banned_tokens=NEVER_GENERATED)

    def loop(filtering: bool):
        next_token = make_sampler(*settings, filtering=filtering)
        token_at = token_chooser(
            next_token, prompt_ids, prompt_lengths, uniforms, decoder.sequence_length
        )
        first = token_at(position, logits) if token is None else token
        return decode_steps(decoder, weights, token_at, position, first, cache, last)

    return tf.cond(needs_filtering(*settings), lambda: loop(True), lambda: loop(False))


def generate_tokens(
    decoder: TransformerDecoding | UnigramDecoding,
    prompt_ids: tf.Tensor,
    prompt_lengths: tf.Tensor,
    max_tokens: tf.Tensor,
    temperature: tf.Tensor,
    top_k: tf.Tensor,
    top_p: tf.Tensor,
    uniforms: tf.Tensor,
) -> tf.Tensor:
    """Continues right-padded prompts [B, P] (lengths [B] >= 1) by max_tokens [B] tokens each.

    `uniforms` [B, N >= max(max_tokens)] holds each example's random numbers in [0, 1). Needs
    prompt_lengths + max_tokens <= sequence_length. Returns token ids int32 [B, max(max_tokens)],
    padded with PAD_ID after each example's max_tokens. Padding and [UNK] are never generated
    (an [UNK] in a sample says nothing to a reader; the model's other words are renormalised).
    """
    settings = (temperature, top_k, top_p)
    first = tf.reduce_min(prompt_lengths)
    end = tf.reduce_max(prompt_lengths + max_tokens)
    logits, cache = prefill_banned(decoder, prompt_ids[:, :first])
    _, _, _, tokens = sample_steps(
        decoder, settings, prompt_ids, prompt_lengths, uniforms, first, cache, end - 1,
        logits=logits,
    )
    by_position = tf.transpose(tokens)  # [B, end - first]
    count = tf.reduce_max(max_tokens)
    offsets = prompt_lengths[:, None] - first + tf.range(count)[None, :]
    generated = tf.gather(by_position, tf.minimum(offsets, end - first - 1), batch_dims=1)
    return tf.where(tf.range(count)[None, :] < max_tokens[:, None], generated, PAD_ID)
