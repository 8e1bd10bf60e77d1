"""Training callback that samples text at several temperatures every epoch (DLwP 12.1)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import tensorflow as tf

from models.text.decoding import cached_decoding
from models.text.generator import TextGenerator


class SampleTextCallback(keras.callbacks.Callback):
    """Every epoch, continues `prompt` once per temperature with the cached generator and writes
    the texts as TensorBoard text summaries (`<log_dir>/samples`, tag `temperature_<t>`).

    The latest samples are in `samples` ({temperature: text}); `history` keeps (epoch, samples)
    for every epoch. The seed is the same every epoch, so epochs differ only by the weights.
    `max_tokens` is capped at the model's sequence_length - 1.
    """

    def __init__(
        self,
        vocabulary: list[str],
        log_dir: str,
        prompt: str = "this movie",
        temperatures: Sequence[float] = (0.2, 0.5, 0.7, 1.0, 1.5),
        max_tokens: int = 50,
        seed: int = 0,
    ):
        super().__init__()
        self.vocabulary = vocabulary
        self.log_dir = log_dir
        self.prompt = prompt
        self.temperatures = [float(t) for t in temperatures]
        self.max_tokens = max_tokens
        self.seed = seed
        self.samples: dict[float, str] = {}
        self.history: list[tuple[int, dict[float, str]]] = []
        self._generator: TextGenerator | None = None
        self._writer = None

    def generate_samples(self) -> dict[float, str]:
        """One continuation of the prompt per temperature, as {temperature: text}."""
        if self._generator is None:
            sequence_length = cached_decoding(self.model).sequence_length
            self._generator = TextGenerator(
                self.model,
                self.vocabulary,
                max_new_tokens=min(self.max_tokens, sequence_length - 1),
                max_batch_size=len(self.temperatures),
            )
        count = len(self.temperatures)
        outputs = self._generator.generate(
            prompt=tf.constant([self.prompt] * count),
            max_tokens=tf.fill([count], self._generator.max_new_tokens),
            temperature=tf.constant(self.temperatures, tf.float32),
            top_k=tf.zeros([count], tf.int32),
            top_p=tf.ones([count], tf.float32),
            seed=tf.fill([count], tf.constant(self.seed, tf.int64)),
        )
        texts = [text.decode("utf-8") for text in outputs["text"].numpy()]
        return dict(zip(self.temperatures, texts, strict=True))

    def on_epoch_end(self, epoch, logs=None):
        self.samples = self.generate_samples()
        self.history.append((epoch, self.samples))
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "samples"))
        with self._writer.as_default(step=epoch):
            for temperature, text in self.samples.items():
                tf.summary.text(f"temperature_{temperature:g}", text)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
