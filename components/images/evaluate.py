"""Evaluation components of the image generators: a held-out metric, a reference, the blessing.

- `VaeEvaluator`: held-out negative ELBO in nats per image (`models.vae.negative_elbo`, one
  stateless reparameterized sample per image, so the number is reproducible). Blessed when it is
  at most `max_negative_elbo`, and no worse than the latest blessed model's (plus a tolerance).
- `GanEvaluator`: the unbiased kernel inception distance (`models.kid`) between `kid_images`
  generated images and as many held-out real images, on pooled InceptionV3 features (ImageNet
  weights, `kid_weights`; images resized to `kid_image_size`, 299 as in the paper, 75 the
  smallest InceptionV3 takes). The same is measured for an untrained generator of the same
  architecture (fresh initialization, seeded): the reference a trained one must beat. Blessed
  when KID <= `max_kid`, KID <= `max_untrained_ratio` x the untrained KID, and no worse than the
  latest blessed model's (plus a tolerance).
  With the optional `classifier` input (a `DigitClassifierTrainer` Model, digit sets only) it
  also scores the same generated images with the digit classifier, as TF-GAN does for MNIST
  (`models.digit_classifier`): the classifier score (higher is better, at most 10) and the
  Fréchet distance in the classifier's feature space to the held-out real images (lower is
  better), for both generators, and the classifier's accuracy on those real images. Then it
  also asks classifier score >= `min_classifier_score` and classifier FID <=
  `max_classifier_fid_ratio` x the untrained generator's; the defaults (0 and 1) only refuse a
  generator worse than an untrained one.
Both write `metrics.json` into the ModelEvaluation and record the decision on the ModelBlessing
(`components.common.evaluation`); the Pusher pushes only a blessed model.
"""

# No `from __future__ import annotations`: the @component decorator reads the real type hints.

import dataclasses
import os
import time

from absl import logging
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import (
    Examples,
    Model,
    ModelBlessing,
    ModelEvaluation,
    TransformGraph,
)

from components.common import evaluation as common

NEGATIVE_ELBO = "negative_elbo"
KID, KID_STD = "kid", "kid_std"
UNTRAINED_KID, UNTRAINED_KID_STD = "untrained_kid", "untrained_kid_std"
CLASSIFIER_SCORE, CLASSIFIER_FID = "classifier_score", "classifier_fid"
UNTRAINED_CLASSIFIER_SCORE = "untrained_classifier_score"
UNTRAINED_CLASSIFIER_FID = "untrained_classifier_fid"
CLASSIFIER_ACCURACY = "classifier_accuracy"


@dataclasses.dataclass(frozen=True)
class KidSettings:
    """How KID is measured: sample sizes, subsets and the InceptionV3 extractor."""

    images: int = 1000  # generated images, and held-out real images (at most the split's size)
    image_size: int = 299  # InceptionV3 input size (>= 75)
    weights: str = "packaged"  # models.pretrained weights: imagenet, packaged or a file
    num_subsets: int = 100
    subset_size: int = 1000
    seed: int = 0
    batch_size: int = 64


def _eval_split(examples: Examples) -> list:
    return [os.path.join(artifact_utils.get_split_uri([examples], "eval"), "*")]


def vae_metrics(
    eval_files: list, transform_uri: str, model_uri: str, *, batch_size: int, seed: int
) -> dict:
    """Held-out negative ELBO (nats per image) of the Trainer's Keras VAE."""
    import keras
    import tensorflow_transform as tft

    import models.vae  # noqa: F401 (registers the VAE classes for loading)
    from components.images.data import image_dataset, keras_model_path
    from components.images.vae_trainer import KERAS_FILE
    from models.vae import negative_elbo

    transform_output = tft.TFTransformOutput(transform_uri)
    vae = keras.saving.load_model(keras_model_path(model_uri, KERAS_FILE), compile=False)
    held_out = image_dataset(eval_files, transform_output, batch_size)
    count = sum(int(batch.shape[0]) for batch in held_out)
    return {
        NEGATIVE_ELBO: negative_elbo(vae, held_out, seed=seed),
        "eval_images": count,
        "latent_dim": vae.latent_dim,
    }


def vae_checks(value: float, *, max_negative_elbo: float, baseline: float | None,
               baseline_tolerance: float) -> list:
    """The VAE's blessing checks on its held-out negative ELBO (lower is better)."""
    name = "negative ELBO (nats)"
    return [
        _missed_by(common.at_most(name, value, max_negative_elbo), value, max_negative_elbo),
        common.no_worse_than_baseline(name, value, baseline, baseline_tolerance),
    ]


def generated_images(generator, count: int, seed: int, batch_size: int = 64):
    """`count` images of `generator` from seeded standard-normal latent points, as numpy."""
    import numpy as np

    latent_dim = int(generator.input_shape[-1])
    z = np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)
    return np.concatenate([
        np.asarray(generator(z[start:start + batch_size], training=False))
        for start in range(0, count, batch_size)
    ])


def classifier_metrics(classifier, real, labels, generated, untrained) -> dict:
    """Digit-classifier scores of two sets of generated images against held-out `real` ones
    (float32 [N, 28, 28, 1] in [0, 1]); `labels` (or None) give the classifier's accuracy."""
    import numpy as np

    from models import digit_classifier as digits

    started = time.monotonic()
    expected = tuple(classifier.input_shape[1:])
    if tuple(real.shape[1:]) != expected:
        raise ValueError(
            f"classifier: the digit classifier takes {expected} images, the GAN's data are "
            f"{tuple(real.shape[1:])}; allowed: a classifier only for digit datasets"
        )
    real_features, real_predictions = digits.features_and_predictions(classifier, real)
    metrics = {"real_classifier_score": digits.classifier_score(real_predictions)}
    if labels is not None:
        metrics[CLASSIFIER_ACCURACY] = float(np.mean(real_predictions.argmax(axis=1) == labels))
    for score, fid, images in ((CLASSIFIER_SCORE, CLASSIFIER_FID, generated),
                               (UNTRAINED_CLASSIFIER_SCORE, UNTRAINED_CLASSIFIER_FID, untrained)):
        features, predictions = digits.features_and_predictions(classifier, images)
        metrics[score] = digits.classifier_score(predictions)
        metrics[fid] = digits.frechet_distance(real_features, features)
    metrics["classifier_seconds"] = round(time.monotonic() - started, 1)
    return metrics


def gan_metrics(
    eval_files: list, transform_uri: str, model_uri: str, kid: KidSettings,
    classifier_uri: str | None = None,
) -> dict:
    """KID of the Trainer's generator and of an untrained copy, against held-out real images;
    with `classifier_uri` (a `DigitClassifierTrainer` Model) the classifier scores too."""
    import keras
    import tensorflow_transform as tft

    from components.images.data import keras_model_path, load_images
    from components.images.gan_trainer import KERAS_FILE
    from models import kid as kid_lib

    started = time.monotonic()
    transform_output = tft.TFTransformOutput(transform_uri)
    real, labels = load_images(eval_files, transform_output, max_images=kid.images)
    generator = keras.saving.load_model(keras_model_path(model_uri, KERAS_FILE), compile=False)
    keras.utils.set_random_seed(kid.seed)
    untrained = keras.models.clone_model(generator)  # same layers, freshly initialized weights

    extractor = kid_lib.inception_extractor(kid.weights)

    def features(images):
        return kid_lib.inception_features(images, extractor, batch_size=kid.batch_size,
                                          image_size=kid.image_size)

    def distance(fake_features):
        return kid_lib.kernel_inception_distance(
            real_features, fake_features, num_subsets=kid.num_subsets,
            subset_size=kid.subset_size, seed=kid.seed,
        )

    real_features = features(real)
    count = len(real)
    generated = generated_images(generator, count, kid.seed)
    untrained_generated = generated_images(untrained, count, kid.seed)
    trained_kid, trained_std = distance(features(generated))
    untrained_kid, untrained_std = distance(features(untrained_generated))
    kid_seconds = round(time.monotonic() - started, 1)
    scores = {}
    if classifier_uri is not None:
        from components.images.digit_classifier import classifier_path

        classifier = keras.saving.load_model(classifier_path(classifier_uri), compile=False)
        scores = classifier_metrics(classifier, real, labels, generated, untrained_generated)
    return {
        KID: trained_kid,
        KID_STD: trained_std,
        UNTRAINED_KID: untrained_kid,
        UNTRAINED_KID_STD: untrained_std,
        "kid_images": count,
        "kid_image_size": kid.image_size,
        "kid_subset_size": min(kid.subset_size, count),
        "kid_num_subsets": kid.num_subsets,
        "kid_weights": kid.weights,
        "kid_seconds": kid_seconds,
        **scores,
    }


def _missed_by(check: common.Check, value: float, limit: float) -> common.Check:
    """`check`, saying by how much `value` missed `limit` when it failed."""
    if check.passed:
        return check
    return common.Check(False, f"{check.text} (missed by {abs(value - limit):.4g})")


def gan_checks(
    metrics: dict, *, max_kid: float, max_untrained_ratio: float, baseline: float | None,
    baseline_tolerance: float, min_classifier_score: float, max_classifier_fid_ratio: float,
) -> list:
    """The GAN's blessing checks: KID's, and the classifier's when `metrics` has its scores."""
    value, untrained = metrics[KID], metrics[UNTRAINED_KID]
    relative = max_untrained_ratio * untrained
    checks = [
        _missed_by(common.at_most("KID", value, max_kid), value, max_kid),
        _missed_by(common.at_most(
            "KID", value, relative,
            f"{max_untrained_ratio:.3g} x untrained generator's KID {untrained:.4g} ="),
            value, relative),
        common.no_worse_than_baseline("KID", value, baseline, baseline_tolerance),
    ]
    if CLASSIFIER_SCORE not in metrics:
        return checks
    score, fid = metrics[CLASSIFIER_SCORE], metrics[CLASSIFIER_FID]
    untrained_fid = metrics[UNTRAINED_CLASSIFIER_FID]
    fid_limit = max_classifier_fid_ratio * untrained_fid
    return [
        *checks,
        _missed_by(common.Check(
            score >= min_classifier_score,
            f"classifier score {score:.4g} >= threshold {min_classifier_score:.4g}"),
            score, min_classifier_score),
        _missed_by(common.at_most(
            "classifier FID", fid, fid_limit,
            f"{max_classifier_fid_ratio:.3g} x untrained generator's classifier FID "
            f"{untrained_fid:.4g} ="), fid, fid_limit),
    ]


def _report(message: str, model_id: int) -> None:
    logging.info("Evaluation of model %d: %s", model_id, message)
    print(f"  {message}", flush=True)


@component
def VaeEvaluator(  # noqa: N802 (TFX component names are classes)
    examples: InputArtifact[Examples],
    transform_graph: InputArtifact[TransformGraph],
    model: InputArtifact[Model],
    evaluation: OutputArtifact[ModelEvaluation],
    blessing: OutputArtifact[ModelBlessing],
    baseline_blessing: InputArtifact[ModelBlessing] = None,
    max_negative_elbo: Parameter[float] = 200.0,
    baseline_tolerance: Parameter[float] = 0.05,
    batch_size: Parameter[int] = 256,
    seed: Parameter[int] = 0,
):
    """Held-out negative ELBO of the VAE and the blessing (see the module docstring)."""
    baseline_id, baseline = common.baseline_metric(baseline_blessing, NEGATIVE_ELBO)
    metrics = vae_metrics(_eval_split(examples), transform_graph.uri, model.uri,
                          batch_size=batch_size, seed=seed)
    blessed, message = common.decide(vae_checks(
        metrics[NEGATIVE_ELBO], max_negative_elbo=max_negative_elbo, baseline=baseline,
        baseline_tolerance=baseline_tolerance))
    _report(message, model.id)
    common.record(
        evaluation=evaluation, blessing=blessing, model=model, metrics=metrics,
        blessed=blessed, message=message,
        report={
            "baseline_model_id": baseline_id,
            "baseline_negative_elbo": baseline,
            "criteria": {"max_negative_elbo": max_negative_elbo,
                         "baseline_tolerance": baseline_tolerance},
        },
    )


@component
def GanEvaluator(  # noqa: N802 (TFX component names are classes)
    examples: InputArtifact[Examples],
    transform_graph: InputArtifact[TransformGraph],
    model: InputArtifact[Model],
    evaluation: OutputArtifact[ModelEvaluation],
    blessing: OutputArtifact[ModelBlessing],
    baseline_blessing: InputArtifact[ModelBlessing] = None,
    classifier: InputArtifact[Model] = None,
    max_kid: Parameter[float] = 1.0,
    max_untrained_ratio: Parameter[float] = 1.0,
    baseline_tolerance: Parameter[float] = 0.25,
    kid_images: Parameter[int] = 1000,
    kid_image_size: Parameter[int] = 299,
    kid_weights: Parameter[str] = "packaged",
    kid_num_subsets: Parameter[int] = 100,
    kid_subset_size: Parameter[int] = 1000,
    min_classifier_score: Parameter[float] = 0.0,
    max_classifier_fid_ratio: Parameter[float] = 1.0,
    seed: Parameter[int] = 0,
):
    """KID of the generator and of an untrained one (and, with a `classifier`, the digit
    classifier's scores), and the blessing (see the module docstring)."""
    baseline_id, baseline = common.baseline_metric(baseline_blessing, KID)
    settings = KidSettings(kid_images, kid_image_size, kid_weights, kid_num_subsets,
                           kid_subset_size, seed)
    metrics = gan_metrics(_eval_split(examples), transform_graph.uri, model.uri, settings,
                          classifier.uri if classifier is not None else None)
    blessed, message = common.decide(gan_checks(
        metrics, max_kid=max_kid, max_untrained_ratio=max_untrained_ratio, baseline=baseline,
        baseline_tolerance=baseline_tolerance, min_classifier_score=min_classifier_score,
        max_classifier_fid_ratio=max_classifier_fid_ratio,
    ))
    _report(message, model.id)
    common.record(
        evaluation=evaluation, blessing=blessing, model=model, metrics=metrics,
        blessed=blessed, message=message,
        report={
            "baseline_model_id": baseline_id,
            "baseline_kid": baseline,
            "criteria": {"max_kid": max_kid, "max_untrained_ratio": max_untrained_ratio,
                         "baseline_tolerance": baseline_tolerance,
                         "min_classifier_score": min_classifier_score,
                         "max_classifier_fid_ratio": max_classifier_fid_ratio},
            "classifier_model_id": classifier.id if classifier is not None else None,
        },
    )
