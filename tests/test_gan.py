"""A tiny DCGAN trains on real MNIST digits for a few seconds; its SavedModel serves generations.

Judging the trained generator with InceptionV3 at 75x75+ would dominate the test time on 2 CPU
cores, so KID is computed here in the feature space of a small digit classifier trained on the
same digits (the usual "FID with a LeNet" for MNIST): same estimator, cheaper features.
"""

import keras
import numpy as np
import pytest
import session_path
import tensorflow as tf
from keras import layers

from models import gan, image_exports, kid
from sources.digits import mnist

SHAPE = (28, 28, 1)
LATENT = 64
MAX_BATCH = 8


@pytest.fixture(scope="module")
def digits():
    """2,000 training and 500 held-out MNIST digits in [0, 1], with labels."""
    data = mnist("test")
    images = data.images[:2500].astype(np.float32)[..., None] / 255.0
    return images[:2000], data.labels[:2000].astype(np.int64), images[2000:]


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    train, _, _ = digits
    keras.utils.set_random_seed(0)
    model = gan.build_gan(SHAPE, latent_dim=LATENT, width=0.25, seed=3)
    untrained = keras.models.clone_model(model.generator)
    untrained.set_weights(model.generator.get_weights())
    folder = tmp_path_factory.mktemp("monitor")
    monitor = gan.GANMonitor(folder / "samples", folder / "logs", num_images=9)
    history = model.fit(train, epochs=2, batch_size=32, verbose=0, callbacks=[monitor])
    return model, untrained, history.history, folder


@pytest.fixture(scope="module")
def digit_features(digits):
    """Penultimate activations of a small classifier trained on the training digits."""
    train, labels, _ = digits
    inputs = keras.Input(SHAPE)
    x = layers.Conv2D(16, 3, strides=2, activation="relu")(inputs)
    x = layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    features = layers.Dense(64, activation="relu")(layers.Flatten()(x))
    classifier = keras.Model(inputs, layers.Dense(10, activation="softmax")(features))
    classifier.compile("adam", "sparse_categorical_crossentropy")
    classifier.fit(train, labels, epochs=2, batch_size=64, verbose=0)
    return keras.Model(inputs, features)


def latents(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, LATENT)).astype(np.float32)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 1), (64, 64, 3)])
def test_architecture_matches_the_data(shape):
    generator = gan.build_generator(shape, latent_dim=8, width=1 / 16)
    discriminator = gan.build_discriminator(shape, width=1 / 16)
    assert generator.output_shape == (None, *shape)
    assert discriminator.output_shape == (None, 1)
    book = gan.build_generator((64, 64, 3))  # the book's 8x8 start and 128/256/512 filters
    assert book.layers[2].output.shape[1:] == (8, 8, 128)
    assert [la.filters for la in book.layers if isinstance(la, layers.Conv2DTranspose)] == [
        128,
        256,
        512,
    ]


def test_losses_are_finite(trained):
    _, _, history, _ = trained
    assert len(history["d_loss"]) == len(history["g_loss"]) == 2
    assert np.isfinite(history["d_loss"]).all() and np.isfinite(history["g_loss"]).all()


def test_training_changes_the_generator(trained):
    model, untrained, _, _ = trained
    z = latents(16)
    before, after = np.asarray(untrained(z)), np.asarray(model.generator(z))
    assert np.abs(after - before).mean() > 0.05


def test_keras_format_round_trip(trained, tmp_path):
    model, _, _, _ = trained
    model.save(tmp_path / "gan.keras")
    restored = keras.models.load_model(tmp_path / "gan.keras")
    z = latents(4)
    np.testing.assert_allclose(restored.generator(z), model.generator(z), atol=1e-6)
    assert restored.g_optimizer.learning_rate.numpy() == pytest.approx(1e-4)
    assert restored.d_optimizer.iterations.numpy() == model.d_optimizer.iterations.numpy() > 0


def test_monitor_writes_sample_grids(trained):
    _, _, _, folder = trained
    grids = sorted((folder / "samples").glob("epoch_*.png"))
    assert [path.name for path in grids] == ["epoch_000.png", "epoch_001.png"]
    assert tf.io.decode_png(tf.io.read_file(str(grids[-1]))).shape == (84, 84, 1)
    events = list((folder / "logs").glob("events.out.tfevents.*"))
    tags = {
        value.tag
        for event in tf.compat.v1.train.summary_iterator(str(events[0]))
        for value in event.summary.value
    }
    assert "generated" in tags


def test_training_lowers_kid(trained, digits, digit_features):
    model, untrained, _, _ = trained
    _, _, held_out = digits
    real = kid.features(held_out, digit_features)

    def kid_of(generator: keras.Model) -> float:
        fake = kid.features(np.asarray(generator(latents(500))), digit_features)
        return kid.kernel_inception_distance(real, fake, num_subsets=20, subset_size=250)[0]

    trained_kid, untrained_kid = kid_of(model.generator), kid_of(untrained)
    assert trained_kid < 0.2 * untrained_kid  # measured on this setup: about 90x lower
    # Yet a few seconds of training do not fool the metric: real digits are closer still.
    real_kid, _ = kid.kernel_inception_distance(
        real, kid.features(digits[0][:500], digit_features), num_subsets=20, subset_size=250
    )
    assert real_kid < trained_kid


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    model, _, _, _ = trained
    export_dir = tmp_path_factory.mktemp("gan") / "1"
    limits = image_exports.GANLimits(max_batch=MAX_BATCH)
    info = image_exports.export_gan(model.generator, export_dir, limits=limits)
    return session_path.signatures(export_dir), info


def test_signatures_and_dtypes(served):
    signatures, info = served
    assert set(signatures) == {"serving_default", "generate", "decode"}
    assert info["info"]["latent_dim"] == LATENT and info["info"]["image_shape"] == list(SHAPE)
    out = signatures["generate"](seed=tf.constant([1, 2, 3], tf.int64))
    assert out["images"].dtype == tf.uint8 and out["images"].shape == (3, *SHAPE)
    assert out["png_bytes"].dtype == tf.string and out["png_bytes"].shape == (3,)
    np.testing.assert_array_equal(tf.io.decode_png(out["png_bytes"][2]), out["images"][2])
    default = signatures["serving_default"](seed=tf.constant([1, 2, 3], tf.int64))
    np.testing.assert_array_equal(default["images"], out["images"])


def test_generate_is_keyed_by_seed_and_matches_decode(served, trained):
    signatures, _ = served
    model, _, _, _ = trained
    first = signatures["generate"](seed=tf.constant([7, 8, 7], tf.int64))["images"].numpy()
    again = signatures["generate"](seed=tf.constant([8], tf.int64))["images"].numpy()
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first[1], again[0])
    assert np.abs(first[0].astype(int) - first[1]).max() > 10
    z = image_exports.latents_from_seeds(tf.constant([7, 8], tf.int64), LATENT)
    decoded = signatures["decode"](z=z)["images"].numpy()
    np.testing.assert_array_equal(decoded, first[:2])
    expected = np.round(np.asarray(model.generator(z)) * 255)
    assert np.abs(decoded.astype(np.float32) - expected).max() <= 1


def names_input(name: str) -> str:
    """The failed check's message starts with the input's name (or lists it among `inputs`)."""
    return rf"assertion failed: \[(inputs [\w, ]*)?\b{name}\b"


@pytest.mark.parametrize(
    "signature,name,inputs",
    [
        ("generate", "seed", {"seed": tf.constant([-3], tf.int64)}),
        ("generate", "seed", {"seed": tf.zeros([MAX_BATCH + 1], tf.int64)}),
        ("generate", "seed", {"seed": tf.zeros([0], tf.int64)}),
        ("serving_default", "seed", {"seed": tf.constant([-1], tf.int64)}),
        ("decode", "z", {"z": tf.fill([1, LATENT], np.nan)}),
        ("decode", "z", {"z": tf.zeros([MAX_BATCH + 1, LATENT])}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_inputs_fail_naming_the_input(served, signature, name, inputs):
    signatures, _ = served
    with pytest.raises(tf.errors.InvalidArgumentError, match=names_input(name)):
        signatures[signature](**inputs)
