"""SavedModel export of the text LM: `generate`, `generate_start`, `generate_step`,
`serving_default` and `score`.

Signatures (every input and output has a leading batch dimension B <= max_batch_size):
- `generate`: prompt string, max_tokens int32, temperature float32 (0 = greedy), top_k int32
  (0 = off), top_p float32 (1 = off), seed int64 -> text string (prompt + continuation),
  continuation string, token_ids int32 [B, max(max_tokens)], num_tokens int32. Decodes with a
  key/value cache in a `tf.while_loop`; the same inputs give the same outputs.
- `generate_start`, `generate_step`: the same generation one word per call, with the decoding
  state (the key/value cache included) as explicit tensors (`stepwise.py`).
- `serving_default`: prompt string -> probabilities float32 [B, V] of the next word.
- `score`: text string -> log_likelihood float32, num_tokens int32, perplexity float32.

Context policy (also in the metadata): `generate` keeps the last
min(max_prompt_tokens, sequence_length - max_tokens) words of the standardized prompt, so the
continuation always has exactly max_tokens words; `serving_default` keeps the last
sequence_length words, `score` the last sequence_length + 1.

The vocabulary travels as the asset `vocabulary.txt` (line i = word of id i + 1, from "[UNK]";
padding, id 0, is the empty word and has no line) read into lookup tables. The limits are fixed
at export: they are in the contract sidecar (`contracts.SIDECAR`) and the loaded module's
`limits()`. Inputs, defaults and ranges come from `contracts.text_lm`.
"""

from __future__ import annotations

import os
import tempfile

import keras
import tensorflow as tf

from contracts import text_lm
from models import saved_model
from models.text.standardize import PAD_ID
from models.text.stepwise import StepwiseTextGenerator

VOCABULARY_FILE = "vocabulary.txt"

CONTEXT_POLICY = (
    "generate keeps the last min(max_prompt_tokens, sequence_length - max_tokens) words of the "
    "standardized prompt, so prompt + continuation fit in the context and the continuation has "
    "exactly max_tokens words; serving_default keeps the last sequence_length words of the "
    "prompt; score scores the last sequence_length + 1 words (num_tokens = words - 1)."
)


class TextLMExport(StepwiseTextGenerator):
    """The generator with its vocabulary as a SavedModel asset and a `limits` function."""

    def __init__(self, model: keras.Model, vocabulary: list[str], vocabulary_path: str, **limits):
        super().__init__(
            model, vocabulary, vocabulary_file=tf.saved_model.Asset(vocabulary_path), **limits
        )
        constants = self.limit_values()
        self.limits = tf.function(lambda: {k: tf.constant(v) for k, v in constants.items()})
        self.limits.get_concrete_function()  # traced now so that the SavedModel keeps it


# Facts of an export beyond its limits, kept in the sidecar: the policies a client relies on.
POLICIES = {
    "context_policy": CONTEXT_POLICY,
    "sampling": (
        "temperature 0 = greedy argmax; otherwise softmax(logits / temperature) restricted "
        "to the top_k words (0 = off) and then to the smallest set reaching top_p (1 = off); "
        "per-example stateless randomness keyed by seed; padding is never generated."
    ),
    "standardization": "lowercase, <br /> tags to spaces, ASCII punctuation removed, "
    "split on whitespace; unknown words map to [UNK]",
}


def export_text_lm(
    model: keras.Model,
    vocabulary: list[str],
    export_dir: str,
    *,
    max_prompt_tokens: int | None = None,
    max_new_tokens: int = text_lm.LIMITS["max_new_tokens"],
    max_batch_size: int = text_lm.LIMITS["max_batch_size"],
    max_temperature: float = text_lm.LIMITS["max_temperature"],
) -> dict:
    """Writes a SavedModel of `model` (from build_lm or build_unigram_lm) to `export_dir`.

    `vocabulary` lists the words by id, starting with "" and "[UNK]" (vocabulary_with_specials).
    max_prompt_tokens defaults to the model's sequence_length; max_new_tokens must be at most
    sequence_length - 1. saved_model.pb is written last. Returns the contract sidecar.
    """
    limits = dict(
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=max_new_tokens,
        max_batch_size=max_batch_size,
        max_temperature=max_temperature,
    )
    with tempfile.TemporaryDirectory() as staging:
        vocabulary_path = os.path.join(staging, VOCABULARY_FILE)
        with open(vocabulary_path, "w", encoding="utf-8") as f:
            f.writelines(word + "\n" for word in vocabulary[PAD_ID + 1 :])
        module = TextLMExport(model, vocabulary, vocabulary_path, **limits)
        signatures = {
            "generate": module.generate,
            "generate_start": module.generate_start,
            "generate_step": module.generate_step,
            "serving_default": module.next_token,
            "score": module.score,
        }
        layers, heads, head_dim = module.cache_shape()
        return saved_model.save(
            module,
            export_dir,
            signatures,
            contract=text_lm.CONTRACT,
            limits=module.limit_values(),
            info={**POLICIES, "cache": {"layers": layers, "heads": heads, "head_dim": head_dim}},
        )
