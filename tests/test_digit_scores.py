"""The digit classifier and its GAN scores: the Fréchet distance and the classifier score on
known cases, a tiny classifier on real digits, the trainer component's work and the gate."""

import numpy as np
import pytest
from idx_files import write_idx

from models import digit_classifier as digits


def gaussian(seed: int, n: int = 500, d: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def one_hot(classes: np.ndarray, num_classes: int = 10) -> np.ndarray:
    return np.eye(num_classes)[classes]


def test_frechet_distance_of_identical_feature_sets_is_zero():
    x = gaussian(0)
    assert digits.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_shifted_means_is_the_squared_shift():
    x, shift = gaussian(1), np.linspace(-1.0, 2.0, 8)
    assert digits.frechet_distance(x, x + shift) == pytest.approx(np.sum(shift**2), rel=1e-6)


def test_frechet_distance_of_a_scaled_set_follows_the_formula():
    # b = 2a: mu_b = 2 mu_a and S_b = 4 S_a, so (S_a S_b)^(1/2) = 2 S_a and
    # FD = ||mu_a||^2 + Tr(S_a + 4 S_a - 4 S_a) = ||mu_a||^2 + Tr(S_a).
    x = gaussian(2) + 0.5
    expected = np.sum(x.mean(axis=0) ** 2) + np.trace(np.cov(x, rowvar=False))
    assert digits.frechet_distance(x, 2 * x) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_survives_singular_covariances():
    x = np.zeros((50, 4))
    x[:, 0] = np.arange(50.0)  # three constant (dead) features: rank-1 covariance
    distance = digits.frechet_distance(x, x + 1.0)
    assert np.isfinite(distance) and distance == pytest.approx(4.0, rel=1e-3)


def test_frechet_distance_rejects_mismatched_features():
    with pytest.raises(ValueError, match="same d"):
        digits.frechet_distance(gaussian(0, d=8), gaussian(1, d=4))


def test_classifier_score_is_the_number_of_classes_for_certain_uniform_predictions():
    probabilities = one_hot(np.arange(1000) % 10)
    assert digits.classifier_score(probabilities) == pytest.approx(10.0, rel=1e-6)
    assert digits.classifier_score(one_hot(np.arange(1000) % 5)) == pytest.approx(5.0, rel=1e-6)


def test_classifier_score_is_one_for_constant_predictions():
    certain = one_hot(np.full(100, 3))
    unsure = np.full((100, 10), 0.1)
    assert digits.classifier_score(certain) == pytest.approx(1.0, abs=1e-6)
    assert digits.classifier_score(unsure) == pytest.approx(1.0, abs=1e-6)


def test_classifier_score_lies_between_one_and_the_number_of_classes():
    logits = np.random.default_rng(0).standard_normal((300, 10)) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert 1.0 < digits.classifier_score(probabilities) < 10.0



@pytest.fixture(scope="module")
def mnist_sample():
    from sources._carriers import MissingAssetError
    from sources.digits import load_digits

    try:
        train, test = load_digits("mnist", "train"), load_digits("mnist", "test")
    except MissingAssetError as error:
        pytest.skip(str(error))
    return train.images[:600], train.labels[:600], test.images[:400], test.labels[:400]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_sample):
    """The trainer component's work on a folder of 600 + 400 MNIST digits as IDX files (the
    format of a user's own digit set): (properties, the saved classifier loaded back)."""
    import keras

    from components.images.digit_classifier import classifier_path, train_and_save

    folder, model_uri = tmp_path_factory.mktemp("idx"), tmp_path_factory.mktemp("model")
    for prefix, images, labels in (("train", *mnist_sample[:2]), ("t10k", *mnist_sample[2:])):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    properties = train_and_save(str(model_uri), str(folder), max_images=0, epochs=2,
                                batch_size=32, seed=0)
    return properties, keras.saving.load_model(classifier_path(str(model_uri)), compile=False)


@pytest.fixture(scope="module")
def tiny_classifier(trained):
    return trained[1]


def test_a_tiny_classifier_learns_digits_and_scores_real_above_noise(mnist_sample,
                                                                     tiny_classifier):
    _, _, test_images, test_labels = mnist_sample
    assert digits.accuracy(tiny_classifier, test_images, test_labels) > 0.5  # chance: 0.1
    real_a, real_b = test_images[:200], test_images[200:]
    noise = np.random.default_rng(0).uniform(size=(200, 28, 28, 1)).astype(np.float32)
    features_a, _ = digits.features_and_predictions(tiny_classifier, real_a)
    features_b, predictions_b = digits.features_and_predictions(tiny_classifier, real_b)
    noise_features, noise_predictions = digits.features_and_predictions(tiny_classifier, noise)
    assert features_a.shape == (200, digits.FEATURE_SIZE)
    np.testing.assert_allclose(predictions_b.sum(axis=1), 1.0, rtol=1e-5)
    assert digits.frechet_distance(features_a, features_b) < 0.5 * digits.frechet_distance(
        features_a, noise_features)
    assert digits.classifier_score(predictions_b) > digits.classifier_score(noise_predictions)


def test_train_classifier_checks_its_inputs():
    with pytest.raises(ValueError, match="epochs"):
        digits.train_classifier(np.zeros((4, 28, 28)), np.zeros(4), epochs=0)


def test_the_trainer_component_saves_a_classifier_that_loads(trained, mnist_sample):
    properties, loaded = trained
    assert properties["train_images"] == 600 and properties["eval_images"] == 400
    assert properties["epochs"] == 2 and "idx" in properties["dataset"]
    _, _, test_images, test_labels = mnist_sample
    held_out = digits.accuracy(loaded, test_images, test_labels)
    assert held_out == pytest.approx(properties["accuracy"], abs=1e-9)  # the same test digits


def test_the_trainer_component_refuses_image_folders(tmp_path):
    from components.images.digit_classifier import labelled_dataset

    (tmp_path / "face.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="no labelled digits.*allowed: 'mnist'"):
        labelled_dataset(str(tmp_path))


def test_the_evaluator_scores_both_generators_and_gates_on_them(tiny_classifier, mnist_sample):
    from components.common.evaluation import decide
    from components.images import evaluate

    _, _, test_images, test_labels = mnist_sample
    real = test_images[:200, ..., None].astype(np.float32) / 255.0
    noise = np.random.default_rng(1).uniform(size=(200, 28, 28, 1)).astype(np.float32)
    good = test_images[200:400, ..., None].astype(np.float32) / 255.0  # a perfect "generator"
    metrics = evaluate.classifier_metrics(tiny_classifier, real, test_labels[:200], good, noise)
    assert metrics["classifier_fid"] < metrics["untrained_classifier_fid"]
    assert metrics["classifier_score"] > metrics["untrained_classifier_score"]
    assert 0.5 < metrics["classifier_accuracy"] <= 1.0

    kid = {"kid": 0.1, "untrained_kid": 0.5}
    settings = {"max_kid": 1.0, "max_untrained_ratio": 1.0, "baseline": None,
                "baseline_tolerance": 0.25}
    blessed, message = decide(evaluate.gan_checks(
        {**kid, **metrics}, **settings, min_classifier_score=0.0, max_classifier_fid_ratio=1.0))
    assert blessed and "classifier FID" in message
    blessed, message = decide(evaluate.gan_checks(
        {**kid, **metrics}, **settings, min_classifier_score=50.0, max_classifier_fid_ratio=1e-6))
    shortfall = 50.0 - metrics["classifier_score"]
    assert not blessed and f"classifier score {metrics['classifier_score']:.4g} >= threshold 50 " \
        f"(missed by {shortfall:.4g})" in message
    assert "classifier FID" in message and "KID" not in message.split("failed")[1]
    # Without a classifier the gate is KID's alone, as before.
    blessed, message = decide(evaluate.gan_checks(
        kid, **settings, min_classifier_score=50.0, max_classifier_fid_ratio=1e-6))
    assert blessed and "classifier" not in message


def test_a_classifier_does_not_fit_a_face_gan(tiny_classifier):
    from components.images import evaluate

    faces = np.zeros((4, 64, 64, 3), np.float32)
    with pytest.raises(ValueError, match="classifier: the digit classifier takes"):
        evaluate.classifier_metrics(tiny_classifier, faces, None, faces, faces)


def test_the_gan_evaluator_takes_the_classifier_as_an_optional_input():
    from tfx.types import Channel, standard_artifacts

    from components.images.digit_classifier import DigitClassifierTrainer
    from components.images.evaluate import GanEvaluator

    inputs = {"examples": Channel(type=standard_artifacts.Examples),
              "transform_graph": Channel(type=standard_artifacts.TransformGraph),
              "model": Channel(type=standard_artifacts.Model)}
    assert "classifier" not in GanEvaluator(**inputs).inputs  # today's pipelines, unchanged
    trainer = DigitClassifierTrainer(dataset="mnist", max_images=2000, epochs=1)
    evaluator = GanEvaluator(**inputs, classifier=trainer.outputs["model"],
                             min_classifier_score=2.0, max_classifier_fid_ratio=0.5)
    assert evaluator.inputs["classifier"] is trainer.outputs["model"]
    assert not trainer.inputs  # parameters only: TFX's cache reuses it across runs
    assert evaluator.exec_properties["min_classifier_score"] == 2.0
