"""Text generation with a key/value cache, softmax temperature, top-k and top-p.

`TextGenerator` is the one generator of the project: the training callback samples with it and
the SavedModel export (`export.py`) saves it with its signatures. Generation runs in a
`tf.while_loop` for a whole batch: the shared prompt prefix is run once through the model
(`prefill`), then every step feeds one token per example through the same weights, attending
over a key/value cache that grows by one position per step. Examples with a longer prompt are
fed their remaining prompt words through the same steps before they start sampling, so every
example of the batch is at the same position at every step.

Randomness is stateless and per example: example b draws its k-th word with the k-th number of
`stateless_uniform([max_new_tokens], seed=[seed[b], 0])`, by inverse-CDF sampling from the
tempered (and top-k/top-p filtered) softmax. A result therefore depends only on that example's
prompt and settings, not on the rest of the batch. Padding is never generated.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from contracts import text_lm
from models.text.lm import TokenAndPositionEmbedding, TransformerDecoderBlock, UnigramLogits
from models.text.standardize import PAD, PAD_ID, UNK, UNK_ID, tokenize

# Tokens `generate` never emits: padding, and [UNK] (it carries no word a reader could use).
NEVER_GENERATED = (PAD_ID, UNK_ID)


class TransformerDecoding:
    """Incremental inference with the weights of a `build_lm` model.

    `prefill` runs the model's layers on the shared prompt prefix and keeps their keys and
    values. `step` then feeds one token per example with the same weights, read once per call
    by `read_weights` (outside the loop, so the loop body holds only the per-token math, with
    the query/key/value projections fused into one matmul). The cache is a list
    [keys_0, values_0, keys_1, ...] of [B, H, T, D/H] tensors holding the T positions fed so
    far; each step appends one position (a concat copies O(T), like the attention reads,
    instead of rewriting a fixed-capacity buffer: 3x faster at B=32).
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
            blocks.append(
                {
                    "qkv": (
                        tf.concat([value(p.kernel) for p in projections], axis=1),
                        tf.concat([value(p.bias) for p in projections], axis=0),
                    ),
                    "output": (
                        value(attention.output_projection.kernel),
                        value(attention.output_projection.bias),
                    ),
                    "attention_norm": norm(block.attention_norm),
                    "feed_forward_in": (
                        value(block.feed_forward_in.kernel),
                        value(block.feed_forward_in.bias),
                    ),
                    "feed_forward_out": (
                        value(block.feed_forward_out.kernel),
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

    def step(self, weights, token_ids, position, cache) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Feeds one token per example [B] at `position` (shared by the batch); returns the
        logits [B, V] and the cache with that position filled."""
        x = tf.gather(weights["tokens"], token_ids) + weights["positions"][position]
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
            hidden = tf.nn.relu(_dense(x, block["feed_forward_in"]))
            x = _layer_norm(
                x + _dense(hidden, block["feed_forward_out"]), block["feed_forward_norm"]
            )
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
    [B, H, T, d] -> [B, H, d].

    For small batches, multiply-and-sum: the oneDNN BatchMatMul and Softmax kernels cost a fixed
    ~30 us a call, which doubles the attention time at B=1; from B=5, BatchMatMul is faster.
    """
    scale = queries.shape[-1] ** -0.5

    def multiply_and_sum():
        scores = tf.reduce_sum(queries * keys, axis=-1) * scale
        weights = tf.exp(scores - tf.reduce_max(scores, axis=-1, keepdims=True))
        attention = weights / tf.reduce_sum(weights, axis=-1, keepdims=True)  # [B, H, T]
        return tf.reduce_sum(attention[..., None] * values, axis=-2)

    def batch_matmul():
        scores = tf.matmul(queries, keys, transpose_b=True) * scale  # [B, H, 1, T]
        attention = tf.nn.softmax(scores)
        return tf.matmul(attention, values)[:, :, 0]

    return tf.cond(tf.shape(queries)[0] <= 4, multiply_and_sum, batch_matmul)


def _layer_norm(x: tf.Tensor, gamma_beta_epsilon: tuple) -> tf.Tensor:
    gamma, beta, epsilon = gamma_beta_epsilon
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)


class UnigramDecoding:
    """The unigram baseline behind the same interface (no cache needed)."""

    def __init__(self, model: keras.Model):
        (self.unigram,) = [x for x in model.layers if isinstance(x, UnigramLogits)]
        self.sequence_length = self.unigram.sequence_length
        self.vocab_size = self.unigram.vocab_size

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


def make_sampler(
    temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Returns next_token(logits [B, V], uniform [B]) -> token ids int32 [B] for per-example
    settings [B]: argmax where temperature is 0, otherwise the inverse CDF at `uniform` of
    softmax(logits / temperature) after top-k (0 = off) and top-p (1 = off) filtering.

    Work that does not change between steps (which examples sample or filter) is done here
    once; the returned function skips the sort, the sampling or the argmax when no example of
    the batch needs them.
    """
    greedy = temperature <= 0
    divisor = tf.where(greedy, 1.0, temperature)[:, None]
    any_greedy = tf.reduce_any(greedy)
    any_sampling = tf.reduce_any(~greedy)
    any_filtering = tf.reduce_any(((top_k > 0) | (top_p < 1.0)) & ~greedy)

    def next_token(logits: tf.Tensor, uniform: tf.Tensor) -> tf.Tensor:
        none = tf.zeros_like(uniform, tf.int32)

        def sample():
            tempered = logits / divisor
            tempered = tf.cond(
                any_filtering, lambda: filter_top_k_top_p(tempered, top_k, top_p), lambda: tempered
            )
            return inverse_cdf(tf.nn.softmax(tempered), uniform)

        sampled = tf.cond(any_sampling, sample, lambda: none)
        argmax = tf.cond(
            any_greedy, lambda: tf.argmax(logits, axis=-1, output_type=tf.int32), lambda: none
        )
        return tf.where(greedy, argmax, sampled)

    return next_token


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
    next_token = make_sampler(temperature, top_k, top_p)
    first = tf.reduce_min(prompt_lengths)
    end = tf.reduce_max(prompt_lengths + max_tokens)
    last_prompt_column = tf.shape(prompt_ids)[1] - 1
    last_uniform = tf.shape(uniforms)[1] - 1

    def token_at(position, logits):
        """The prompt's token at `position` where it has one, otherwise a sampled token."""
        generated = tf.clip_by_value(position - prompt_lengths, 0, last_uniform)
        sampled = next_token(logits, tf.gather(uniforms, generated, batch_dims=1))
        from_prompt = tf.gather(prompt_ids, tf.minimum(position, last_prompt_column), axis=1)
        return tf.where(position < prompt_lengths, from_prompt, sampled)

    weights = decoder.read_weights(banned_tokens=NEVER_GENERATED)
    logits, cache = decoder.prefill(prompt_ids[:, :first])
    banned = _ban(tf.zeros([decoder.vocab_size]), NEVER_GENERATED)
    token = token_at(first, logits + banned)
    # tokens[i] is the token at position first + i.
    tokens = tf.TensorArray(tf.int32, size=tf.maximum(end - first, 1)).write(0, token)

    def body(position, token, cache, tokens):
        logits, cache = decoder.step(weights, token, position, cache)
        token = token_at(position + 1, logits)
        return position + 1, token, cache, tokens.write(position + 1 - first, token)

    growing = [tf.TensorShape([None, c.shape[1], None, c.shape[3]]) for c in cache]
    _, _, _, tokens = tf.while_loop(
        lambda position, *_: position < end - 1,
        body,
        (first, token, cache, tokens),
        shape_invariants=(first.shape, token.shape, growing, tf.TensorShape(None)),
        parallel_iterations=1,
    )
    by_position = tf.transpose(tokens.stack())  # [B, end - first]
    count = tf.reduce_max(max_tokens)
    offsets = prompt_lengths[:, None] - first + tf.range(count)[None, :]
    generated = tf.gather(by_position, tf.minimum(offsets, end - first - 1), batch_dims=1)
    return tf.where(tf.range(count)[None, :] < max_tokens[:, None], generated, PAD_ID)


def _check(condition: tf.Tensor, message: str, *values: tf.Tensor) -> tf.Operation:
    """An in-graph check failing with INVALID_ARGUMENT and `message` (plus the offending values)."""
    return tf.debugging.Assert(condition, [message, *values], summarize=16)


def _after(checks: list[tf.Operation], *tensors):
    """The tensors (ragged ones too), usable only once every check has passed."""
    with tf.control_dependencies(checks):
        return tf.nest.map_structure(tf.identity, tensors, expand_composites=True)


def _cut_left(ids: tf.RaggedTensor, keep: tf.Tensor) -> tf.Tensor:
    """Keeps the last `keep` [B] ids of each row; returns them right-padded [B, max(keep)]."""
    ends = ids.row_limits()
    kept = tf.gather(ids.values, tf.ragged.range(ends - tf.cast(keep, ends.dtype), ends))
    return tf.cast(kept.to_tensor(default_value=PAD_ID), tf.int32)


def _check_vocabulary(vocabulary: list[str], vocab_size: int) -> None:
    """Raises ValueError unless `vocabulary` follows the project's id convention."""
    if len(vocabulary) != vocab_size or vocabulary[:2] != [PAD, UNK]:
        raise ValueError(
            f"vocabulary must list the model's {vocab_size} words by id, starting with "
            f'"" and "[UNK]" (see vocabulary_with_specials); got {len(vocabulary)} words '
            f"starting with {vocabulary[:2]}"
        )
    words = vocabulary[2:]
    bad = [word for word in words if not word or word != word.strip() or len(word.split()) > 1]
    if bad or len(set(words)) != len(words) or PAD in words or UNK in words:
        raise ValueError(
            "vocabulary words must be unique, non-empty, without whitespace and without the "
            f"specials after id 1; first bad words: {bad[:5]}"
        )


class TextGenerator(tf.Module):
    """Generation, next-token probabilities and scoring for a word-level LM, with its vocabulary.

    Methods are `tf.function`s with [B]-shaped inputs (B <= max_batch_size) that validate their
    inputs in the graph; `export.py` saves them as the serving signatures.

    Context policy: the model sees at most `sequence_length` words. `generate` keeps the last
    min(max_prompt_tokens, sequence_length - max_tokens) words of each standardized prompt, so
    the prompt and its continuation always fit in the context and every example gets exactly
    its `max_tokens` new words; `next_token` keeps the last sequence_length prompt words and
    `score` the last sequence_length + 1 words of each text.
    """

    def __init__(
        self,
        model: keras.Model,
        vocabulary: list[str],
        *,
        vocabulary_file: tf.saved_model.Asset | None = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int = text_lm.LIMITS["max_new_tokens"],
        max_batch_size: int = text_lm.LIMITS["max_batch_size"],
        max_temperature: float = text_lm.LIMITS["max_temperature"],
    ):
        super().__init__(name="text_generator")
        self.model = model
        self._decoder = cached_decoding(model)
        self.sequence_length = self._decoder.sequence_length
        self.vocab_size = self._decoder.vocab_size
        vocabulary = list(vocabulary)
        _check_vocabulary(vocabulary, self.vocab_size)
        self.max_prompt_tokens = max_prompt_tokens or self.sequence_length
        if not 1 <= self.max_prompt_tokens <= self.sequence_length:
            raise ValueError(f"max_prompt_tokens must be in [1, {self.sequence_length}]")
        if not 0 <= max_new_tokens < self.sequence_length:
            raise ValueError(
                f"max_new_tokens must be in [0, {self.sequence_length - 1}] (sequence_length - 1)"
            )
        if max_batch_size < 1 or max_temperature <= 0:
            raise ValueError("max_batch_size must be >= 1 and max_temperature > 0")
        self.max_new_tokens = max_new_tokens
        self.max_batch_size = max_batch_size
        self.max_temperature = float(max_temperature)
        self.vocabulary_file = vocabulary_file
        self.word_to_id, self.id_to_word = self._lookup_tables(vocabulary, vocabulary_file)

    @staticmethod
    def _lookup_tables(vocabulary, vocabulary_file):
        """word -> id (unknown words -> UNK_ID) and id -> word tables, from the asset if given
        (a file listing the words of ids 1, 2, ..., one a line)."""
        if vocabulary_file is not None:
            # Line i of the file is the word of id i + 1: padding (id 0) is an empty word and
            # lookup tables refuse empty lines.
            line = tf.lookup.TextFileIndex
            words = tf.lookup.TextFileInitializer(
                vocabulary_file,
                tf.string,
                line.WHOLE_LINE,
                tf.int64,
                line.LINE_NUMBER,
                value_index_offset=PAD_ID + 1,
            )
            ids = tf.lookup.TextFileInitializer(
                vocabulary_file,
                tf.int64,
                line.LINE_NUMBER,
                tf.string,
                line.WHOLE_LINE,
                value_index_offset=PAD_ID + 1,
            )
        else:
            id_range = tf.range(len(vocabulary), dtype=tf.int64)
            words = tf.lookup.KeyValueTensorInitializer(tf.constant(vocabulary), id_range)
            ids = tf.lookup.KeyValueTensorInitializer(id_range, tf.constant(vocabulary))
        return (
            tf.lookup.StaticHashTable(words, default_value=UNK_ID),
            tf.lookup.StaticHashTable(ids, default_value=""),
        )

    def limit_values(self) -> dict[str, int | float]:
        """The limits fixed at construction (export), as Python numbers."""
        return {
            "sequence_length": self.sequence_length,
            "vocab_size": self.vocab_size,
            "max_batch_size": self.max_batch_size,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_new_tokens": self.max_new_tokens,
            "max_temperature": self.max_temperature,
        }

    def _check_batch(self, name: str, texts: tf.Tensor) -> tf.Operation:
        size = tf.shape(texts)[0]
        return _check(
            (size >= 1) & (size <= self.max_batch_size),
            f"{name}: batch size must be in [1, {self.max_batch_size}]; got",
            size,
        )

    def _token_ids(self, texts, name: str, min_words: int) -> tuple[tf.RaggedTensor, list]:
        """Vocabulary ids of the standardized words [B, (words)], and the checks of the batch
        size and word counts (pass them to `_after`)."""
        ids = self.word_to_id.lookup(tokenize(texts))
        lengths = ids.row_lengths()
        checks = [
            self._check_batch(name, texts),
            _check(
                tf.reduce_all(lengths >= min_words),
                f"{name}: every element needs at least {min_words} word(s) after standardization "
                "(lowercase, punctuation removed); word counts:",
                lengths,
            ),
        ]
        return ids, checks

    @tf.function(
        autograph=False,
        input_signature=[
            tf.TensorSpec([None], tf.string, name="prompt"),
            tf.TensorSpec([None], tf.int32, name="max_tokens"),
            tf.TensorSpec([None], tf.float32, name="temperature"),
            tf.TensorSpec([None], tf.int32, name="top_k"),
            tf.TensorSpec([None], tf.float32, name="top_p"),
            tf.TensorSpec([None], tf.int64, name="seed"),
        ],
    )
    def generate(self, prompt, max_tokens, temperature, top_k, top_p, seed):
        """Continues each prompt by max_tokens words (see the class docstring for the context).

        temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off; the same inputs
        give the same outputs. Returns text (prompt + " " + continuation), continuation,
        token_ids int32 [B, max(max_tokens)] (PAD_ID after num_tokens) and num_tokens.
        """
        batch = tf.shape(prompt)[0]
        ids, checks = self._token_ids(prompt, "prompt", min_words=1)
        checks += [
            _check(tf.shape(x)[0] == batch, f"{name}: must have one value per prompt")
            for name, x in [
                ("max_tokens", max_tokens),
                ("temperature", temperature),
                ("top_k", top_k),
                ("top_p", top_p),
                ("seed", seed),
            ]
        ]
        checks += [
            _check(
                tf.reduce_all((max_tokens >= 0) & (max_tokens <= self.max_new_tokens)),
                f"max_tokens: must be in [0, {self.max_new_tokens}]; got",
                max_tokens,
            ),
            _check(
                tf.reduce_all((temperature >= 0) & (temperature <= self.max_temperature)),
                f"temperature: must be in [0, {self.max_temperature:g}] (0 = greedy); got",
                temperature,
            ),
            _check(
                tf.reduce_all((top_k >= 0) & (top_k <= self.vocab_size)),
                f"top_k: must be in [0, {self.vocab_size}] (0 = off); got",
                top_k,
            ),
            _check(
                tf.reduce_all((top_p > 0) & (top_p <= 1)),
                "top_p: must be in (0, 1] (1 = off); got",
                top_p,
            ),
        ]
        ids, max_tokens, temperature, top_k, top_p, seed = _after(
            checks, ids, max_tokens, temperature, top_k, top_p, seed
        )
        room = tf.minimum(self.max_prompt_tokens, self.sequence_length - max_tokens)
        lengths = tf.minimum(tf.cast(ids.row_lengths(), tf.int32), room)
        uniforms = tf.map_fn(
            lambda s: tf.random.stateless_uniform([self.max_new_tokens], tf.stack([s, 0])),
            seed,
            fn_output_signature=tf.float32,
        )
        token_ids = generate_tokens(
            self._decoder,
            _cut_left(ids, lengths),
            lengths,
            max_tokens,
            temperature,
            top_k,
            top_p,
            uniforms,
        )
        words = self.id_to_word.lookup(tf.cast(token_ids, tf.int64))
        continuation = tf.strings.reduce_join(
            tf.RaggedTensor.from_tensor(words, lengths=max_tokens), axis=1, separator=" "
        )
        separator = tf.where(max_tokens > 0, " ", "")
        text = tf.strings.join([tf.strings.strip(prompt), separator, continuation])
        return {
            "text": text,
            "continuation": continuation,
            "token_ids": token_ids,
            "num_tokens": max_tokens,
        }

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="prompt")])
    def next_token(self, prompt):
        """Probabilities [B, V] of the word after each prompt (its last sequence_length words)."""
        (ids,) = _after(*reversed(self._token_ids(prompt, "prompt", min_words=1)))
        lengths = tf.minimum(tf.cast(ids.row_lengths(), tf.int32), self.sequence_length)
        logits = self.model(_cut_left(ids, lengths), training=False)
        last = tf.gather(logits, lengths - 1, batch_dims=1)
        return {"probabilities": tf.nn.softmax(tf.cast(last, tf.float32))}

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def score(self, text):
        """Log-likelihood (nats) of each text's words 2..n given the preceding ones, the number
        of scored words n - 1 (n capped at sequence_length + 1, cut from the left), and the
        perplexity exp(-log_likelihood / num_tokens)."""
        (ids,) = _after(*reversed(self._token_ids(text, "text", min_words=2)))
        lengths = tf.minimum(tf.cast(ids.row_lengths(), tf.int32), self.sequence_length + 1)
        padded = _cut_left(ids, lengths)
        logits = tf.cast(self.model(padded[:, :-1], training=False), tf.float32)
        log_probabilities = tf.gather(tf.nn.log_softmax(logits), padded[:, 1:], batch_dims=2)
        num_tokens = lengths - 1
        scored = tf.range(tf.shape(log_probabilities)[1])[None, :] < num_tokens[:, None]
        log_likelihood = tf.reduce_sum(tf.where(scored, log_probabilities, 0.0), axis=1)
        return {
            "log_likelihood": log_likelihood,
            "num_tokens": num_tokens,
            "perplexity": tf.exp(-log_likelihood / tf.cast(num_tokens, tf.float32)),
        }
