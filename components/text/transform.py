"""tf.Transform preprocessing for the text LM: words -> ids -> (inputs, targets) of length L.

Like the book's `TextVectorization(max_tokens=V, output_sequence_length=L + 1)` followed by
`x = ids[:, :-1]`, `y = ids[:, 1:]`, but with the vocabulary computed by a Beam pass
(`tft.vocabulary`) and stored in the transform graph, so the Trainer exports the same words.

Settings come from the Transform component's `custom_config`
(`components.text.settings.TextTransformSettings`): `vocab_size` (V, including padding and
[UNK]) and `sequence_length` (L).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from models.text.standardize import PAD_ID, UNK_ID, tokenize

TEXT_FEATURE = "text"
INPUTS = "inputs"
TARGETS = "targets"
VOCABULARY_NAME = "words"
NUM_SPECIAL_IDS = 2  # padding "" (id 0) and "[UNK]" (id 1) come before the vocabulary file's words


def setting(custom_config: dict[str, Any] | None, name: str, minimum: int) -> int:
    """An integer setting of `custom_config`, with a clear error when missing or too small."""
    if not custom_config or name not in custom_config:
        raise ValueError(f"custom_config needs {name!r} (an integer >= {minimum})")
    value = custom_config[name]
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"custom_config {name!r} is {value!r}; allowed: an integer >= {minimum}")
    return value


def _as_vector(texts: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """One string per example: [B] from the [B, 1] dense (or sparse) `text` feature."""
    if isinstance(texts, tf.SparseTensor):
        texts = tf.sparse.to_dense(texts, default_value="")
    return tf.reshape(texts, [-1])


def word_ids(words: tf.RaggedTensor, vocab_size: int) -> tf.RaggedTensor:
    """Ids of `words` under the top `vocab_size - 2` words: file index + 2, unknown -> [UNK]."""
    vocabulary = tft.vocabulary(
        words.flat_values, top_k=vocab_size - NUM_SPECIAL_IDS, vocab_filename=VOCABULARY_NAME
    )
    index = tft.apply_vocabulary(words.flat_values, vocabulary, default_value=-1)
    ids = tf.where(index < 0, tf.constant(UNK_ID, tf.int64), index + NUM_SPECIAL_IDS)
    return words.with_flat_values(ids)


def preprocessing_fn(
    inputs: dict[str, tf.Tensor], custom_config: dict[str, Any] | None = None
) -> dict[str, tf.Tensor]:
    """`text` -> `inputs` and `targets`, int64 [B, L]: the first L + 1 word ids of each document
    (right-padded with 0), shifted by one word."""
    vocab_size = setting(custom_config, "vocab_size", minimum=NUM_SPECIAL_IDS + 1)
    sequence_length = setting(custom_config, "sequence_length", minimum=1)
    words = tokenize(_as_vector(inputs[TEXT_FEATURE]))
    ids = word_ids(words, vocab_size).to_tensor(
        default_value=PAD_ID, shape=[None, sequence_length + 1]
    )
    return {INPUTS: ids[:, :-1], TARGETS: ids[:, 1:]}
