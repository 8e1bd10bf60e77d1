"""`TextGenerator`: the exported generator, with its input checks and vocabulary tables.

It is the one generator of the project: the training callback samples with it and the
SavedModel export (`export.py`, through `stepwise.StepwiseTextGenerator`) saves its methods as
the serving signatures. Decoding is in `decoding.py`, the samplers in `samplers.py`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from contracts import text_lm
from models.text.decoding import cached_decoding, generate_tokens
from models.text.standardize import PAD, PAD_ID, UNK, UNK_ID, tokenize


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
        prompt_ids, lengths, settings, uniforms = self._decoding_inputs(
            prompt, max_tokens, temperature, top_k, top_p, seed
        )
        max_tokens = settings[0]
        token_ids = generate_tokens(self._decoder, prompt_ids, lengths, *settings, uniforms)
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

    def _decoding_inputs(self, prompt, max_tokens, temperature, top_k, top_p, seed):
        """The checked inputs of a generation: prompt ids [B, P] cut by the context policy,
        their lengths [B], the settings (max_tokens, temperature, top_k, top_p) and each row's
        uniform numbers [B, max_new_tokens] drawn from its seed."""
        ids, checks = self._token_ids(prompt, "prompt", min_words=1)
        checks += self._setting_checks(tf.shape(prompt)[0], max_tokens, temperature, top_k,
                                       top_p, seed, "prompt")
        ids, max_tokens, temperature, top_k, top_p, seed = _after(
            checks, ids, max_tokens, temperature, top_k, top_p, seed
        )
        room = tf.minimum(self.max_prompt_tokens, self.sequence_length - max_tokens)
        lengths = tf.minimum(tf.cast(ids.row_lengths(), tf.int32), room)
        settings = (max_tokens, temperature, top_k, top_p)
        return _cut_left(ids, lengths), lengths, settings, self._uniforms(seed)

    def _uniforms(self, seed: tf.Tensor) -> tf.Tensor:
        """Each row's random numbers [B, max_new_tokens]: number k samples continuation word k."""
        return tf.map_fn(
            lambda s: tf.random.stateless_uniform([self.max_new_tokens], tf.stack([s, 0])),
            seed,
            fn_output_signature=tf.float32,
        )

    def _setting_checks(self, batch, max_tokens, temperature, top_k, top_p, seed, rows: str
                        ) -> list[tf.Operation]:
        """In-graph checks of the sampling settings: one value per row of `rows`, in range."""
        checks = [
            _check(tf.shape(x)[0] == batch, f"{name}: must have one value per {rows}")
            for name, x in [
                ("max_tokens", max_tokens),
                ("temperature", temperature),
                ("top_k", top_k),
                ("top_p", top_p),
                ("seed", seed),
            ]
        ]
        return checks + [
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
