"""Word-by-word generation with the decoding state as explicit tensors: `generate_start` and
`generate_step`, the signatures behind streaming.

`generate` runs its whole decoding loop inside one call. These two split the same loop
(`decoding.decode_steps`) into calls: `generate_start` reads the prompts, runs the shared prefix
through the model and chooses the word at the first position; each `generate_step` runs the
loop for `steps` more positions. The state between calls (`contracts.text_lm.STATE`) is
everything the loop carries: the position, the current word, the key/value cache as two
tensors [B, layers, heads, position, head_dim], and the prompt ids still to be fed to rows with
longer prompts. Any TF Serving can run it, a few words per Predict call, and the same settings
give the same words as `generate`: the same loop body chooses them from the same logits with
the same per-row uniform numbers.

A call costs a fixed ~2 ms besides its words (the session run, feeding and fetching the cache,
the weights read again), so a caller that shows words as they come asks for several steps a
call (`steps`, 16 by default): the first word still comes from `generate_start` alone.
"""

from __future__ import annotations

import tensorflow as tf

from models.text.decoding import prefill_banned, sample_steps, token_chooser
from models.text.generator import TextGenerator, _after, _check
from models.text.samplers import make_sampler

SETTINGS_SPEC = [
    tf.TensorSpec([None], tf.int32, name="max_tokens"),
    tf.TensorSpec([None], tf.float32, name="temperature"),
    tf.TensorSpec([None], tf.int32, name="top_k"),
    tf.TensorSpec([None], tf.float32, name="top_p"),
    tf.TensorSpec([None], tf.int64, name="seed"),
]
STATE_SPEC = [
    tf.TensorSpec([None], tf.int32, name="position"),
    tf.TensorSpec([None], tf.int32, name="token"),
    tf.TensorSpec([None, None, None, None, None], tf.float32, name="keys"),
    tf.TensorSpec([None, None, None, None, None], tf.float32, name="values"),
    tf.TensorSpec([None, None], tf.int32, name="prompt_ids"),
    tf.TensorSpec([None], tf.int32, name="prompt_length"),
]
STEPS_SPEC = tf.TensorSpec([None], tf.int32, name="steps")


class StepwiseTextGenerator(TextGenerator):
    """`TextGenerator` with `generate_start` and `generate_step` (see the module docstring)."""

    def cache_shape(self) -> tuple[int, int, int]:
        """(layers, heads, head_dim) of the `keys` and `values` state tensors."""
        return self._decoder.cache_shape

    @tf.function(
        autograph=False, input_signature=[tf.TensorSpec([None], tf.string, name="prompt")]
        + SETTINGS_SPEC,
    )
    def generate_start(self, prompt, max_tokens, temperature, top_k, top_p, seed):
        """Reads the prompts (checked as `generate` checks them); returns the decoding state at
        the first position where some row has no prompt word left, and that position's word."""
        prompt_ids, lengths, settings, uniforms = self._decoding_inputs(
            prompt, max_tokens, temperature, top_k, top_p, seed
        )
        position = tf.reduce_min(lengths)
        logits, cache = prefill_banned(self._decoder, prompt_ids[:, :position])
        token_at = token_chooser(
            make_sampler(*settings[1:]), prompt_ids, lengths, uniforms, self.sequence_length
        )
        token = token_at(position, logits)
        keys, values = self._decoder.stack_cache(cache, tf.shape(prompt)[0], position)
        state = (position, token, keys, values, prompt_ids, lengths)
        return self._outputs(state, position, token[:, None], settings[0])

    @tf.function(autograph=False, input_signature=SETTINGS_SPEC + STATE_SPEC + [STEPS_SPEC])
    def generate_step(
        self, max_tokens, temperature, top_k, top_p, seed,
        position, token, keys, values, prompt_ids, prompt_length, steps,
    ):
        """Decodes up to `steps` positions after `position` (fewer once every row is done) with
        the loop of `generate`; returns the state at the last one and the words decoded.

        The settings must be the ones given to `generate_start` and the state the previous
        call's; the checks refuse what cannot be a state (a cache whose length is not
        `position`, rows at different positions, a position past the context).
        """
        batch = tf.shape(position)[0]
        checks = self._setting_checks(batch, max_tokens, temperature, top_k, top_p, seed,
                                      "row of position")
        checks += self._state_checks(batch, position, token, keys, values, prompt_ids,
                                     prompt_length)
        checks.append(
            _check(
                (tf.shape(steps)[0] == batch)
                & (tf.reduce_min(steps) == tf.reduce_max(steps))
                & tf.reduce_all(steps >= 1),
                "steps: must be one value >= 1 for every row; got",
                steps,
            )
        )
        (max_tokens, temperature, top_k, top_p, seed, position, token, keys, values,
         prompt_ids, prompt_length, steps) = _after(
            checks, max_tokens, temperature, top_k, top_p, seed,
            position, token, keys, values, prompt_ids, prompt_length, steps,
        )
        uniforms = self._uniforms(seed)
        first = position[0]
        end = tf.reduce_max(prompt_length + max_tokens)  # one past the last word of any row
        last = tf.minimum(first + steps[0], end - 1)
        cache = self._decoder.unstack_cache(keys, values)
        at, token, cache, tokens = sample_steps(
            self._decoder, (temperature, top_k, top_p), prompt_ids, prompt_length, uniforms,
            first, cache, last, token=token,
        )
        keys, values = self._decoder.stack_cache(cache, batch, at)
        state = (at, token, keys, values, prompt_ids, prompt_length)
        return self._outputs(state, first + 1, tf.transpose(tokens[1:]), max_tokens)

    def _outputs(self, state, first, token_ids, max_tokens):
        """The outputs of both signatures: the state, and the words at positions first.. (the
        K columns of `token_ids` [B, K]) with their index in the continuation and `done`."""
        position, token, keys, values, prompt_ids, prompt_length = state
        batch = tf.shape(prompt_length)[0]
        positions = first + tf.range(tf.shape(token_ids)[1])
        index = positions[None, :] - prompt_length[:, None]
        is_word = (index >= 0) & (index < max_tokens[:, None])
        words = self.id_to_word.lookup(tf.cast(token_ids, tf.int64))
        return {
            "position": tf.fill([batch], position),
            "token": token,
            "keys": keys,
            "values": values,
            "prompt_ids": prompt_ids,
            "prompt_length": prompt_length,
            "index": index,
            "token_ids": token_ids,
            "word": tf.where(is_word, words, ""),
            "done": (max_tokens == 0) | (position - prompt_length + 1 >= max_tokens),
        }

    def _state_checks(self, batch, position, token, keys, values, prompt_ids, prompt_length
                      ) -> list[tf.Operation]:
        """In-graph checks that the inputs are a state `generate_start` or `generate_step` made."""
        layers, heads, head_dim = self._decoder.cache_shape
        last = self.sequence_length - 2  # the step chooses the word at position + 1
        low, high = tf.reduce_min(position), tf.reduce_max(position)
        cache = tf.stack([batch, layers, heads, high, head_dim])
        return [
            self._check_batch("position", position),
            _check(
                (low == high) & (low >= 1) & (high <= last),
                f"position: must be one value in [1, {last}] for every row (the previous call's "
                "position output); got",
                position,
            ),
            _check(tf.shape(token)[0] == batch, "token: must have one value per row of position"),
            _check(
                tf.reduce_all((token >= 0) & (token < self.vocab_size)),
                f"token: must be word ids in [0, {self.vocab_size - 1}]; got",
                token,
            ),
            _check(
                tf.reduce_all(tf.shape(keys) == cache),
                "keys: must have shape [rows, layers, heads, position, head_dim] = "
                f"[rows, {layers}, {heads}, position, {head_dim}]; got",
                tf.shape(keys),
            ),
            _check(
                tf.reduce_all(tf.shape(values) == cache),
                "values: must have the shape of keys "
                f"[rows, {layers}, {heads}, position, {head_dim}]; got",
                tf.shape(values),
            ),
            _check(
                tf.shape(prompt_ids)[0] == batch,
                "prompt_ids: must have one row per row of position",
            ),
            _check(
                (tf.shape(prompt_length)[0] == batch)
                & tf.reduce_all(
                    (prompt_length >= 1) & (prompt_length <= tf.shape(prompt_ids)[1])
                ),
                "prompt_length: must be one value per row in [1, prompt_ids columns]; got",
                prompt_length,
            ),
        ]
