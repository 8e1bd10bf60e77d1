"""TFX Trainer `run_fn` of the VAE (DLwP 12.4): fit on Transform's images, export the SavedModel.

Settings come from the Trainer's `custom_config` (`VaeTrainerSettings`). Outputs:
- `fn_args.serving_model_dir`: SavedModel with `decode`, `encode`, `sample`, `latent_grid`,
  `interpolate` and, when the data has labels, `edit` (`models.image_exports.export_vae`, with
  the mean latent point of each label of the training split);
- `<model>/Format-Keras/vae.keras`: the Keras VAE, scored by the evaluation component;
- `fn_args.model_run_dir`: TensorBoard loss scalars, and the latent grid image per epoch.
Trained under `components.common.distribution`'s strategy and precision; the outputs above are
the chief's, and what is saved and exported is a float32 copy of the trained VAE.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

from components.common import distribution
from components.common.config import settings_from_config
from components.images.data import (
    has_labels,
    image_dataset,
    image_shape,
    keras_model_path,
    load_images,
    model_uri_of,
)
from components.images.settings import VaeTrainerSettings
from models.image_exports import export_vae
from models.vae import VAE, LatentGridCallback, build_vae, label_means

KERAS_FILE = "vae.keras"


def run_fn(fn_args: Any) -> None:
    """Trains the VAE on the transformed train split and exports it (the chief's outputs)."""
    strategy = distribution.pick_strategy()  # first: multi-worker collectives start here
    settings = settings_from_config(VaeTrainerSettings, fn_args.custom_config)
    keras.utils.set_random_seed(settings.seed)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    shape = image_shape(transform_output)
    repeat = settings.steps_per_epoch > 0
    train = image_dataset(fn_args.train_files, transform_output, settings.batch_size,
                          shuffle_seed=settings.seed, repeat=repeat)
    held_out = image_dataset(fn_args.eval_files, transform_output, settings.batch_size)

    def build() -> VAE:
        return build_vae(settings.latent_dim, shape, learning_rate=settings.learning_rate,
                         seed=settings.seed)

    with distribution.building(strategy, settings.precision):
        vae = distribution.fit_across_workers(build(), strategy)
    chief = distribution.is_chief(strategy)
    with (distribution.output_dir(fn_args.model_run_dir, chief) as run_dir,
          distribution.output_dir(fn_args.serving_model_dir, chief) as serving_dir):
        vae.fit(
            distribution.distributable(train),
            validation_data=distribution.distributable(held_out),
            epochs=settings.epochs,
            steps_per_epoch=settings.steps_per_epoch or None,
            callbacks=[
                keras.callbacks.TensorBoard(log_dir=run_dir),
                LatentGridCallback(os.path.join(run_dir, "latent_grid"),
                                   n=settings.grid_size, extent=settings.grid_extent),
            ],
            verbose=2,
        )
        steps = int(keras.ops.convert_to_numpy(vae.optimizer.iterations))
        logging.info("Trained %d steps (%s)", steps, distribution.describe(strategy))
        _save(distribution.float32_copy(build, vae), fn_args, transform_output, settings,
              serving_dir)


def _save(vae: VAE, fn_args: Any, transform_output: tft.TFTransformOutput,
          settings: VaeTrainerSettings, serving_dir: str) -> None:
    """The Keras VAE beside the SavedModel, then the SavedModel with the label means."""
    keras_path = keras_model_path(model_uri_of(serving_dir), KERAS_FILE)
    tf.io.gfile.makedirs(os.path.dirname(keras_path))
    vae.save(keras_path)
    means = None
    if has_labels(transform_output):
        images, labels = load_images(fn_args.train_files, transform_output,
                                     max_images=settings.label_means_images)
        means = label_means(vae.encoder, images, labels)
    info = export_vae(vae, serving_dir, label_means=means)
    logging.info("Exported the VAE (latent %d, signatures %s) to %s",
                 settings.latent_dim, info["signatures"], serving_dir)
