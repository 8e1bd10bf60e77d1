"""The VAE trains on real MNIST digits for a few seconds; its SavedModel serves every signature."""

import keras
import numpy as np
import pytest
import session_path
import tensorflow as tf

from models import image_exports, vae
from sources.digits import mnist

MAX_BATCH = 16
MAX_GRID = 12


@pytest.fixture(scope="module")
def digits():
    """2,000 training and 500 held-out MNIST digits in [0, 1], with labels."""
    data = mnist("test")
    images = data.images[:2500].astype(np.float32)[..., None] / 255.0
    labels = data.labels[:2500].astype(np.int64)
    return images[:2000], labels[:2000], images[2000:], labels[2000:]


@pytest.fixture(scope="module")
def trained(digits):
    train, _, held_out, _ = digits
    keras.utils.set_random_seed(0)
    model = vae.build_vae(latent_dim=2, seed=1)
    before = vae.negative_elbo(model, held_out)
    history = model.fit(train, epochs=6, batch_size=16, verbose=0, validation_data=(held_out,))
    return model, history.history, before


@pytest.fixture(scope="module")
def means(trained, digits):
    model, _, _ = trained
    train, labels, _, _ = digits
    return vae.label_means(model.encoder, train, labels)


@pytest.fixture(scope="module")
def served(trained, means, tmp_path_factory):
    model, _, _ = trained
    export_dir = tmp_path_factory.mktemp("vae") / "1"
    info = image_exports.export_vae(
        model,
        export_dir,
        label_means=means,
        limits=image_exports.VAELimits(
            max_batch=MAX_BATCH, max_grid=MAX_GRID, max_grid_cells=4 * MAX_GRID**2
        ),
    )
    return session_path.signatures(export_dir), info


def call(signature, **inputs):
    return {key: value.numpy() for key, value in signature(**inputs).items()}


def test_losses_are_the_summed_elbo_terms():
    images = tf.fill([2, 28, 28, 1], 0.5)
    assert np.asarray(vae.reconstruction_loss(images, images)) == pytest.approx(
        [784 * np.log(2)] * 2, rel=1e-4
    )
    kl = vae.kl_divergence(tf.ones([1, 3]), tf.zeros([1, 3]))  # 0.5 * mean^2 per dimension
    assert np.asarray(kl) == pytest.approx([1.5])


def test_training_lowers_the_loss(trained):
    _, history, _ = trained
    assert set(history) >= {"total_loss", "reconstruction_loss", "kl_loss", "val_total_loss"}
    assert history["total_loss"][-1] < 0.8 * history["total_loss"][0]
    total = np.add(history["reconstruction_loss"], history["kl_loss"])
    np.testing.assert_allclose(history["total_loss"], total, rtol=1e-4)


def test_negative_elbo_falls_and_is_reproducible(trained, digits):
    model, history, before = trained
    held_out = digits[2]
    after = vae.negative_elbo(model, held_out, seed=7)
    assert after == vae.negative_elbo(model, held_out, seed=7)
    assert after < before - 50
    # A single-sample estimate: close to Keras' own validation loss of the last epoch.
    assert after == pytest.approx(history["val_total_loss"][-1], rel=0.05)
    dataset = tf.data.Dataset.from_tensor_slices(held_out).batch(256)
    assert vae.negative_elbo(model, dataset, seed=7) == pytest.approx(after, rel=1e-5)


def test_reconstructions_beat_the_mean_image(trained, digits):
    model, _, _ = trained
    train, _, held_out, _ = digits
    reconstruction = np.asarray(model(held_out))
    error = np.mean((reconstruction - held_out) ** 2)
    baseline = np.mean((train.mean(axis=0) - held_out) ** 2)
    assert error < 0.95 * baseline


def test_latent_grid_array_and_tensorboard_callback(trained, tmp_path):
    model, _, _ = trained
    picture = vae.latent_grid(model.decoder, n=5, extent=1.5)
    assert picture.shape == (140, 140, 1)
    assert 0.0 <= picture.min() and picture.max() <= 1.0
    corner = np.asarray(model.decoder(np.array([[-1.5, 1.5]], np.float32)))[0]
    np.testing.assert_allclose(picture[:28, :28], corner, atol=1e-5)  # top-left is (-x, +y)

    callback = vae.LatentGridCallback(str(tmp_path), n=4)
    callback.set_model(model)
    callback.on_epoch_end(0)
    events = list(tmp_path.glob("events.out.tfevents.*"))
    tags = [
        value.tag
        for event in tf.compat.v1.train.summary_iterator(str(events[0]))
        for value in event.summary.value
    ]
    assert "latent_grid" in tags


def test_keras_format_round_trip(trained, tmp_path):
    model, _, _ = trained
    model.save(tmp_path / "vae.keras")
    restored = keras.models.load_model(tmp_path / "vae.keras")
    images = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(restored(images), model(images), atol=1e-6)
    assert restored.optimizer.iterations.numpy() == model.optimizer.iterations.numpy() > 0


def test_signatures_and_dtypes(served):
    signatures, info = served
    assert set(signatures) == {"decode", "encode", "sample", "latent_grid", "interpolate", "edit"}
    assert info["limits"]["max_batch"] == MAX_BATCH and info["info"]["labels"] == list(range(10))
    decoded = call(signatures["decode"], z=tf.zeros([3, 2]))
    assert decoded["images"].shape == (3, 28, 28, 1) and decoded["images"].dtype == np.float32
    assert decoded["png_bytes"].shape == (3,)
    encoded = call(signatures["encode"], images=tf.zeros([3, 28, 28, 1]))
    assert encoded["z_mean"].shape == encoded["z_log_var"].shape == (3, 2)
    sampled = call(signatures["sample"], seed=tf.constant([1, 2], tf.int64))
    assert sampled["z"].shape == (2, 2) and sampled["images"].shape == (2, 28, 28, 1)
    png = tf.io.decode_png(sampled["png_bytes"][0]).numpy()
    np.testing.assert_array_equal(png, np.round(sampled["images"][0] * 255).astype(np.uint8))


def test_served_model_matches_keras(served, trained, digits):
    signatures, _ = served
    model, _, _ = trained
    images = digits[2][:8]
    encoded = call(signatures["encode"], images=tf.constant(images))
    z_mean, _ = model.encoder(images)
    np.testing.assert_allclose(encoded["z_mean"], z_mean, atol=1e-5)
    decoded = call(signatures["decode"], z=tf.constant(encoded["z_mean"]))
    np.testing.assert_allclose(decoded["images"], model(images), atol=1e-5)


def test_sample_is_keyed_by_seed(served):
    signatures, _ = served
    first = call(signatures["sample"], seed=tf.constant([5, 6, 5], tf.int64))
    again = call(signatures["sample"], seed=tf.constant([6, 5], tf.int64))
    np.testing.assert_array_equal(first["images"][0], first["images"][2])
    np.testing.assert_array_equal(first["images"][0], again["images"][1])
    np.testing.assert_array_equal(first["png_bytes"][1], again["png_bytes"][0])
    assert not np.allclose(first["z"][0], first["z"][1])
    assert np.abs(first["images"][0] - first["images"][1]).max() > 0.05


def test_latent_grid_png(served, trained):
    signatures, _ = served
    model, _, _ = trained
    out = call(signatures["latent_grid"], n=tf.constant([3, 7]), extent=tf.constant([1.0, 2.0]))
    small, large = (tf.io.decode_png(png).numpy() for png in out["png_bytes"])
    assert small.shape == (84, 84, 1) and large.shape == (196, 196, 1)
    expected = np.round(vae.latent_grid(model.decoder, 7, 2.0) * 255)
    assert np.abs(large.astype(np.float32) - expected).max() <= 1


def test_interpolate_walks_from_a_to_b(served):
    signatures, _ = served
    z_a = tf.constant([[-1.0, 0.0], [0.0, 1.0]])
    z_b = tf.constant([[1.0, 0.5], [0.0, -1.0]])
    out = call(signatures["interpolate"], z_a=z_a, z_b=z_b, steps=tf.constant([3, 5]))
    assert out["images"].shape == (2, 5, 28, 28, 1)
    ends = call(signatures["decode"], z=tf.concat([z_a, z_b], 0))["images"]
    np.testing.assert_allclose(out["images"][0, 0], ends[0], atol=1e-5)
    np.testing.assert_allclose(out["images"][0, 2], ends[2], atol=1e-5)
    np.testing.assert_allclose(out["images"][1, 4], ends[3], atol=1e-5)
    assert not out["images"][0, 3:].any()  # the shorter strip is padded with black frames
    strip = tf.io.decode_png(out["png_bytes"][1]).numpy()
    assert strip.shape == (28, 5 * 28, 1)


def test_edit_moves_images_toward_the_target_label(served, means, digits):
    signatures, _ = served
    _, _, held_out, labels = digits
    # The two labels whose mean latents lie furthest apart.
    source, target = max(
        ((a, b) for a in means for b in means),
        key=lambda pair: np.linalg.norm(means[pair[0]] - means[pair[1]]),
    )
    images = tf.constant(held_out[labels == source][:MAX_BATCH])
    batch = int(images.shape[0])

    def edit(strength: float) -> np.ndarray:
        return call(
            signatures["edit"],
            images=images,
            from_label=tf.fill([batch], int(source)),
            to_label=tf.fill([batch], int(target)),
            strength=tf.fill([batch], strength),
        )["images"]

    def distance_to_target(z: np.ndarray) -> float:
        return float(np.linalg.norm(z - means[target], axis=1).mean())

    unedited = call(signatures["encode"], images=images)["z_mean"]
    edited = call(signatures["encode"], images=tf.constant(edit(1.0)))["z_mean"]
    assert distance_to_target(edited) < 0.5 * distance_to_target(unedited)
    # Strength 0 is a plain reconstruction through z_mean.
    plain = call(signatures["decode"], z=tf.constant(unedited))["images"]
    np.testing.assert_allclose(edit(0.0), plain, atol=1e-5)


def _bad_requests():
    images, z = tf.zeros([1, 28, 28, 1]), tf.zeros([1, 2])
    one_int, one_float = tf.constant([1]), tf.constant([1.0])
    nan_z = tf.constant([[np.nan, 0.0]])
    too_many = MAX_BATCH + 1
    return [
        ("decode", "z", {"z": tf.zeros([too_many, 2])}),
        ("decode", "z", {"z": nan_z}),
        ("encode", "images", {"images": images + 2.0}),
        ("encode", "images", {"images": tf.zeros([0, 28, 28, 1])}),
        ("sample", "seed", {"seed": tf.constant([-1], tf.int64)}),
        ("sample", "seed", {"seed": tf.zeros([too_many], tf.int64)}),
        ("latent_grid", "n", {"n": tf.constant([MAX_GRID + 1]), "extent": one_float}),
        ("latent_grid", "n", {"n": tf.constant([1]), "extent": one_float}),
        ("latent_grid", "n", {"n": tf.fill([MAX_BATCH], MAX_GRID), "extent": tf.ones([MAX_BATCH])}),
        ("latent_grid", "extent", {"n": tf.constant([3]), "extent": tf.constant([0.0])}),
        ("latent_grid", "extent", {"n": tf.constant([3, 3]), "extent": one_float}),
        ("interpolate", "z_b", {"z_a": z, "z_b": nan_z, "steps": tf.constant([3])}),
        ("interpolate", "steps", {"z_a": z, "z_b": z, "steps": tf.constant([100])}),
        ("interpolate", "steps", {"z_a": z, "z_b": z, "steps": tf.constant([3, 3])}),
        (
            "edit",
            "from_label",
            {
                "images": images,
                "from_label": tf.constant([10]),
                "to_label": one_int,
                "strength": one_float,
            },
        ),
        (
            "edit",
            "to_label",
            {
                "images": images,
                "from_label": one_int,
                "to_label": tf.constant([-1]),
                "strength": one_float,
            },
        ),
        (
            "edit",
            "strength",
            {
                "images": images,
                "from_label": one_int,
                "to_label": one_int,
                "strength": tf.constant([np.inf]),
            },
        ),
        (
            "edit",
            "images",
            {
                "images": images - 1.0,
                "from_label": one_int,
                "to_label": one_int,
                "strength": one_float,
            },
        ),
    ]


def names_input(name: str) -> str:
    """The failed check's message starts with the input's name (or lists it among `inputs`)."""
    return rf"assertion failed: \[(inputs [\w, ]*)?\b{name}\b"


@pytest.mark.parametrize(
    "signature,name,inputs", _bad_requests(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_bad_inputs_fail_naming_the_input(served, signature, name, inputs):
    signatures, _ = served
    with pytest.raises(tf.errors.InvalidArgumentError, match=names_input(name)):
        signatures[signature](**inputs)
