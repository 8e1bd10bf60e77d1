"""The samplers: softmax temperature, top-k and top-p (nucleus) filtering, inverse-CDF draws.

Randomness is stateless and per example: the caller passes each row's uniform number in
[0, 1) (the generator draws example b's k-th word with the k-th number of
`stateless_uniform([max_new_tokens], seed=[seed[b], 0])`), so a result depends only on that
example's logits and settings, not on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def filter_top_k_top_p(
    logits: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor, candidates: int = 256
) -> tf.Tensor:
    """Sets to -inf the logits [B, V] outside each example's top_k (0 = off) most likely words,
    then outside the smallest set of those whose renormalized probability reaches top_p (1 = off).

    Sorting all V logits is slow on CPU (60 ms for [32, 15000]), so the rows are first resolved
    from their `candidates` largest logits (tf.math.top_k); only when some row's top-k set or
    nucleus reaches past them is the whole vocabulary sorted.
    """
    vocab_size = logits.shape[-1]
    keep_k = tf.where(top_k > 0, tf.minimum(top_k, vocab_size), vocab_size)
    off = (keep_k == vocab_size) & (top_p >= 1.0)

    def lowest_kept(ranked: tf.Tensor, log_mass: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """From descending logits [B, N] and the log of the top-k set's total mass: the lowest
        kept logit and the number of kept words per row."""
        count = ranked.shape[-1]
        in_top_k = tf.range(count) < keep_k[:, None]
        probabilities = tf.where(in_top_k, tf.exp(ranked - log_mass[:, None]), 0.0)
        mass_before = tf.cumsum(probabilities, axis=-1, exclusive=True)
        kept = tf.reduce_sum(tf.cast(mass_before < top_p[:, None], tf.int32), axis=-1)
        kept = tf.clip_by_value(tf.minimum(kept, keep_k), 1, count)
        return tf.gather(ranked, kept - 1, batch_dims=1), kept

    def log_mass_of_top_k(ranked: tf.Tensor) -> tf.Tensor:
        in_top_k = tf.range(ranked.shape[-1]) < keep_k[:, None]
        return tf.reduce_logsumexp(tf.where(in_top_k, ranked, float("-inf")), axis=-1)

    count = min(candidates, vocab_size)
    ranked = tf.math.top_k(logits, count).values
    top_k_in_candidates = keep_k <= count
    log_mass = tf.where(
        top_k_in_candidates, log_mass_of_top_k(ranked), tf.reduce_logsumexp(logits, axis=-1)
    )
    threshold, kept = lowest_kept(ranked, log_mass)
    resolved = off | top_k_in_candidates | ((keep_k == vocab_size) & (kept < count))

    def from_full_sort():
        ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
        return lowest_kept(ranked, log_mass_of_top_k(ranked))[0]

    threshold = tf.cond(tf.reduce_all(resolved), lambda: threshold, from_full_sort)
    threshold = tf.where(off, float("-inf"), threshold)
    return tf.where(logits >= threshold[:, None], logits, float("-inf"))


def _block_size(vocab_size: int) -> int:
    """A divisor of vocab_size near its square root if there is one (no padding), else 128."""
    root = int(vocab_size**0.5)
    divisors = [d for d in range(max(1, root // 2), 2 * root + 1) if vocab_size % d == 0]
    return min(divisors, key=lambda d: abs(d - root)) if divisors else 128


def inverse_cdf(
    probabilities: tf.Tensor, uniform: tf.Tensor, block_size: int | None = None
) -> tf.Tensor:
    """Per row of probabilities [B, V] (normalized or not), the first index whose cumulative
    probability exceeds uniform [B] (in [0, 1)) times the row's total; never an index of
    probability 0.

    Two levels (pick a block of `block_size` words by the block totals, then the word inside it)
    because tf.cumsum along a long last axis is slow on CPU (4 ms for [32, 15000]).
    """
    vocab_size = probabilities.shape[-1]
    block_size = block_size or _block_size(vocab_size)
    blocks = -(-vocab_size // block_size)
    if blocks * block_size != vocab_size:
        probabilities = tf.pad(probabilities, [[0, 0], [0, blocks * block_size - vocab_size]])
    grouped = tf.reshape(probabilities, [-1, blocks, block_size])
    block_mass = tf.reduce_sum(grouped, axis=-1)
    block_cdf = tf.cumsum(block_mass, axis=-1)
    nearly_one = 1.0 - 2.0**-20  # keeps rounding from pointing past the last positive mass
    target = tf.minimum(uniform[:, None] * block_cdf[:, -1:], block_cdf[:, -1:] * nearly_one)
    block = tf.minimum(tf.searchsorted(block_cdf, target, side="right"), blocks - 1)
    mass_before = tf.gather(block_cdf - block_mass, block, batch_dims=1)
    inside_cdf = tf.cumsum(tf.gather(grouped, block[:, 0], batch_dims=1), axis=-1)
    remaining = tf.clip_by_value(target - mass_before, 0.0, inside_cdf[:, -1:] * nearly_one)
    offset = tf.searchsorted(inside_cdf, remaining, side="right")
    return block[:, 0] * block_size + offset[:, 0]


def needs_filtering(temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Whether some sampling example of the batch asks for top-k or top-p filtering."""
    return tf.reduce_any(((top_k > 0) | (top_p < 1.0)) & (temperature > 0))


def make_sampler(
    temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor, filtering: bool = True
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Returns next_token(logits [B, V], uniform [B]) -> token ids int32 [B] for per-example
    settings [B]: argmax where temperature is 0, otherwise the inverse CDF at `uniform` of
    softmax(logits / temperature) after top-k (0 = off) and top-p (1 = off) filtering.

    A decoding loop calls it every step, so it has no branches (a tf.cond in a loop body costs
    more than the work it would skip) and one code path: greedy rows are sampled at temperature
    2^-100 with uniform 0, which is the first argmax (multiplying by a power of two keeps order
    and ties; softmax then gives the maxima all the mass and the inverse CDF at 0 picks the
    first of them). That holds for logits below 2^28 in magnitude whose largest values differ
    by more than 1e-28 or not at all. With `filtering` False the top-k/top-p filter is left
    out, which is exact only when `needs_filtering` is false (the decoding loop branches on
    that once per call).
    """
    greedy = temperature <= 0
    scale = tf.where(greedy, 2.0**100, 1.0 / tf.where(greedy, 1.0, temperature))[:, None]

    def next_token(logits: tf.Tensor, uniform: tf.Tensor) -> tf.Tensor:
        tempered = logits * scale
        if filtering:
            tempered = filter_top_k_top_p(tempered, top_k, top_p)
        return inverse_cdf(tf.nn.softmax(tempered), tf.where(greedy, 0.0, uniform))

    return next_token
