"""Text standardization and the vocabulary convention shared by training and serving.

`standardize` matches Keras `TextVectorization(standardize="lower_and_strip_punctuation")`
(lowercase, drop ASCII punctuation) and also turns the `<br />` tags of IMDB reviews into spaces.
Only `tf.strings` ops are used, so the same function runs in tf.Transform's `preprocessing_fn`
(graph mode, any shape) and inside the exported serving signatures.

Vocabulary convention: id 0 is padding (""), id 1 is "[UNK]", and the words of the vocabulary
file follow from id 2, most frequent first.
"""

from __future__ import annotations

import tensorflow as tf

PAD = ""
UNK = "[UNK]"
PAD_ID = 0
UNK_ID = 1

# IMDB reviews separate paragraphs with "<br />" (sometimes "<br/>" or "<br>").
_LINE_BREAK_TAG = r"(?i)<br\s*/?\s*>"
# The ASCII punctuation that TextVectorization strips (string.punctuation).
_PUNCTUATION = r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]"


def standardize(texts: tf.Tensor) -> tf.Tensor:
    """Lowercases, replaces `<br />` tags by spaces and removes punctuation (same shape)."""
    texts = tf.convert_to_tensor(texts, dtype=tf.string)
    texts = tf.strings.regex_replace(texts, _LINE_BREAK_TAG, " ")
    texts = tf.strings.lower(texts, encoding="utf-8")
    return tf.strings.regex_replace(texts, _PUNCTUATION, "")


def tokenize(texts: tf.Tensor) -> tf.RaggedTensor:
    """Standardizes and splits on whitespace: shape [...] -> ragged [..., (words)]."""
    return tf.strings.split(standardize(texts))


def vocabulary_with_specials(words: list[str]) -> list[str]:
    """Returns the id -> word list: padding, [UNK], then `words` (specials in `words` dropped)."""
    return [PAD, UNK] + [word for word in words if word not in (PAD, UNK)]
