"""TFX Trainer `run_fn` of the VAE (DLwP 12.4): fit on Transform's images, export the SavedModel.

Settings come from the Trainer's `custom_config` (`VaeTrainerSettings`). Outputs:
- `fn_args.serving_model_dir`: SavedModel with `decode`, `encode`, `sample`, `latent_grid`,
  `interpolate` and, when the data has labels, `edit` (`models.image_exports.export_vae`, with
  the mean latent point of each label of the training split);
- `<model>/Format-Keras/vae.keras`: the Keras VAE, scored by the evaluation component;
- `fn_args.model_run_dir`: TensorBoard loss scalars, and the latent grid image per epoch.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

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
from models.vae import LatentGridCallback, build_vae, label_means

KERAS_FILE = "vae.keras"


def run_fn(fn_args: Any) -> None:
    """Trains the VAE on the transformed train split and exports it."""
    settings = settings_from_config(VaeTrainerSettings, fn_args.custom_config)
    keras.utils.set_random_seed(settings.seed)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    shape = image_shape(transform_output)
    repeat = settings.steps_per_epoch > 0
    train = image_dataset(fn_args.train_files, transform_output, settings.batch_size,
                          shuffle_seed=settings.seed, repeat=repeat)
    held_out = image_dataset(fn_args.eval_files, transform_output, settings.batch_size)

    vae = build_vae(settings.latent_dim, shape, learning_rate=settings.learning_rate,
                    seed=settings.seed)
    vae.fit(
        train,
        validation_data=held_out,
        epochs=settings.epochs,
        steps_per_epoch=settings.steps_per_epoch or None,
        callbacks=[
            keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
            LatentGridCallback(os.path.join(fn_args.model_run_dir, "latent_grid"),
                               n=settings.grid_size, extent=settings.grid_extent),
        ],
        verbose=2,
    )

    keras_path = keras_model_path(model_uri_of(fn_args.serving_model_dir), KERAS_FILE)
    tf.io.gfile.makedirs(os.path.dirname(keras_path))
    vae.save(keras_path)
    means = None
    if has_labels(transform_output):
        images, labels = load_images(fn_args.train_files, transform_output,
                                     max_images=settings.label_means_images)
        means = label_means(vae.encoder, images, labels)
    info = export_vae(vae, fn_args.serving_model_dir, label_means=means)
    logging.info("Exported the VAE (latent %d, images %s, signatures %s) to %s",
                 settings.latent_dim, shape, info["signatures"], fn_args.serving_model_dir)
