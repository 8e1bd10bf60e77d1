"""TFX Trainer `run_fn` of the DCGAN (DLwP 12.5): fit on Transform's images, export the generator.

The generator's shape follows the data (28x28x1 digits, 64x64x3 faces). Settings come from the
Trainer's `custom_config` (`GanTrainerSettings`). Outputs:
- `fn_args.serving_model_dir`: SavedModel with `generate` (= `serving_default`) and `decode`
  (`models.image_exports.export_gan`);
- `<model>/Format-Keras/generator.keras`: the Keras generator, scored by the evaluation component;
- `fn_args.model_run_dir`: TensorBoard d_loss/g_loss scalars; `samples/` holds a PNG grid of
  generations from fixed latent points per epoch and the same grids as TensorBoard images.
Trained under `components.common.distribution`'s strategy and precision; the outputs above are
the chief's, and what is saved and exported is a float32 copy of the trained generator.
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
from components.images.data import image_dataset, image_shape, keras_model_path, model_uri_of
from components.images.settings import GanTrainerSettings
from models.gan import GANMonitor, build_gan, build_generator
from models.image_exports import export_gan

KERAS_FILE = "generator.keras"
SAMPLES_DIR = "samples"


def adam(settings: GanTrainerSettings) -> keras.optimizers.Adam:
    """One network's optimizer (`build_gan` compiles with Adam's default beta_1 of 0.9)."""
    return keras.optimizers.Adam(settings.learning_rate, beta_1=settings.adam_beta_1)


def run_fn(fn_args: Any) -> None:
    """Trains the DCGAN on the transformed train split and exports its generator (the chief's
    outputs)."""
    strategy = distribution.pick_strategy()  # first: multi-worker collectives start here
    settings = settings_from_config(GanTrainerSettings, fn_args.custom_config)
    keras.utils.set_random_seed(settings.seed)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    shape = image_shape(transform_output)
    repeat = settings.steps_per_epoch > 0
    train = image_dataset(fn_args.train_files, transform_output, settings.batch_size,
                          shuffle_seed=settings.seed, repeat=repeat)

    with distribution.building(strategy, settings.precision):
        gan = build_gan(shape, settings.latent_dim, settings.width, seed=settings.seed)
        gan.compile(d_optimizer=adam(settings), g_optimizer=adam(settings),
                    loss_fn=keras.losses.BinaryCrossentropy())
    gan = distribution.fit_across_workers(gan, strategy)
    chief = distribution.is_chief(strategy)
    with (distribution.output_dir(fn_args.model_run_dir, chief) as run_dir,
          distribution.output_dir(fn_args.serving_model_dir, chief) as serving_dir):
        samples = os.path.join(run_dir, SAMPLES_DIR)
        gan.fit(
            distribution.distributable(train),
            epochs=settings.epochs,
            steps_per_epoch=settings.steps_per_epoch or None,
            callbacks=[
                keras.callbacks.TensorBoard(log_dir=run_dir),
                GANMonitor(output_dir=samples, log_dir=samples,
                           num_images=settings.sample_images, seed=settings.seed),
            ],
            verbose=2,
        )
        steps = int(keras.ops.convert_to_numpy(gan.g_optimizer.iterations))
        logging.info("Trained %d steps (%s)", steps, distribution.describe(strategy))
        generator = distribution.float32_copy(
            lambda: build_generator(shape, settings.latent_dim, settings.width), gan.generator
        )
        keras_path = keras_model_path(model_uri_of(serving_dir), KERAS_FILE)
        tf.io.gfile.makedirs(os.path.dirname(keras_path))
        generator.save(keras_path)
        info = export_gan(generator, serving_dir)
    logging.info("Exported the DCGAN generator (latent %d, images %s, signatures %s) to %s",
                 settings.latent_dim, shape, info["signatures"], serving_dir)
