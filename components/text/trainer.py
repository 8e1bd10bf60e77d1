"""TFX Trainer `run_fn` for the text LM: fit on Transform's output, export the serving SavedModel.

Settings come from the Trainer's `custom_config` (see `TrainerSettings`). Outputs:
- `fn_args.serving_model_dir`: SavedModel with `generate`, `serving_default` and `score`
  (`models.text.export.export_text_lm`), the vocabulary as an asset;
- `<model>/Format-Keras/lm.keras`: the Keras model, scored by the evaluation component;
- `fn_args.model_run_dir`: TensorBoard scalars and per-epoch text samples.
Trained under `components.common.distribution`'s strategy and precision; the outputs above are
the chief's, and what is saved and exported is a float32 copy of the trained LM.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import keras
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

from components.common import distribution
from components.common.config import settings_from_config
from components.text.data import keras_model_path, lm_dataset, vocabulary
from components.text.settings import TrainerSettings
from models.text.callbacks import SampleTextCallback
from models.text.export import export_text_lm
from models.text.lm import build_lm, compile_lm


class LogSamples(keras.callbacks.Callback):
    """Logs the texts of a `SampleTextCallback` after each epoch (it must run before this one)."""

    def __init__(self, sampler: SampleTextCallback):
        super().__init__()
        self.sampler = sampler

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for temperature, text in self.sampler.samples.items():
            logging.info("epoch %d sample at temperature %g: %s", epoch + 1, temperature, text)
            print(f"  epoch {epoch + 1} T={temperature:g}: {text}", flush=True)


def _fit(
    model: keras.Model,
    train: tf.data.Dataset,
    held_out: tf.data.Dataset,
    settings: TrainerSettings,
    log_dir: str,
    sampler: SampleTextCallback,
) -> None:
    """Fits with TensorBoard scalars and text samples; a progress bar on a terminal."""
    model.fit(
        train,
        validation_data=held_out,
        epochs=settings.epochs,
        steps_per_epoch=settings.steps_per_epoch or None,
        callbacks=[keras.callbacks.TensorBoard(log_dir=log_dir), sampler, LogSamples(sampler)],
        verbose=1 if sys.stdout.isatty() else 2,
    )


def run_fn(fn_args: Any) -> None:
    """Trains the Transformer LM on the transformed train split and exports it (the chief's
    outputs)."""
    strategy = distribution.pick_strategy()  # first: multi-worker collectives start here
    settings = settings_from_config(TrainerSettings, fn_args.custom_config)
    keras.utils.set_random_seed(settings.seed)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    words = vocabulary(transform_output)
    repeat = settings.steps_per_epoch > 0
    train = lm_dataset(
        fn_args.train_files, transform_output, settings.batch_size,
        shuffle_seed=settings.seed, repeat=repeat,
    )
    held_out = lm_dataset(fn_args.eval_files, transform_output, settings.batch_size)

    def build() -> keras.Model:
        return build_lm(
            vocab_size=len(words),
            sequence_length=settings.sequence_length,
            embed_dim=settings.embed_dim,
            latent_dim=settings.latent_dim,
            num_heads=settings.num_heads,
            num_layers=settings.num_layers,
        )

    with distribution.building(strategy, settings.precision):
        model = build()
        compile_lm(model, settings.learning_rate)
    model = distribution.fit_across_workers(model, strategy)
    chief = distribution.is_chief(strategy)
    with (distribution.output_dir(fn_args.model_run_dir, chief) as run_dir,
          distribution.output_dir(fn_args.serving_model_dir, chief) as serving_dir):
        sampler = SampleTextCallback(
            words,
            log_dir=run_dir,
            prompt=settings.sample_prompt,
            temperatures=settings.sample_temperatures,
            max_tokens=settings.sample_max_tokens,
            seed=settings.seed,
        )
        with warnings.catch_warnings():
            # Keras warns "Your input ran out of data" at the end of a first epoch over a
            # dataset of unknown length (TFRecords); each epoch here is meant to be one pass.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            _fit(model, distribution.distributable(train), distribution.distributable(held_out),
                 settings, run_dir, sampler)
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        logging.info("Trained %d steps (%s)", steps, distribution.describe(strategy))

        exported = distribution.float32_copy(build, model)
        keras_path = keras_model_path(os.path.dirname(serving_dir.rstrip("/")))
        tf.io.gfile.makedirs(os.path.dirname(keras_path))
        exported.save(keras_path)
        export_text_lm(exported, words, serving_dir, max_new_tokens=settings.max_new_tokens)
    logging.info("Exported the text LM (vocabulary %d words) to %s", len(words), serving_dir)
