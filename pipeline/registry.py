"""The registry of model pipelines: what differs between the models `genpipe run` builds.

Each `ModelPipeline` names its `genpipe run` name, its serving name (`contracts/`), its
profiles, how `--source` is checked, the stages it has and its run-summary lines;
`pipeline.factory.create_pipeline` builds any of them. No TensorFlow or TFX import here (the
CLI reads it to validate arguments quickly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from components.images.dataset import DATASET_HELP, check_dataset, is_digits
from components.schemas import L_INFINITY, MEAN_INTENSITY, NUM_WORDS, WORDS, DriftLimit
from pipeline import summaries
from pipeline.profiles import (
    DREAM_PROFILES,
    FAST_STYLE_PROFILES,
    GAN_PROFILES,
    STYLE_PROFILES,
    TEXT_PROFILES,
    VAE_PROFILES,
)
from pipeline.runner import RunSummary

OFFLINE = "offline"
ALL = "all"  # `genpipe run all`: every registered model, in registry order
DEFAULT_STYLE = "starry_night"  # `genpipe run fast-style` without --style


@dataclasses.dataclass(frozen=True)
class Stages:
    """The components a model's pipeline has; `None` where it has none.

    `example_gen` reads the data (`TextExampleGen`, `ImageExampleGen` or `ContentPhotoGen`) with
    the knobs `source_knob` (data location) and `size_knob` (a field of the profile's ingestion
    settings), both runtime parameters of a compiled spec. With a `preprocessing_fn` the data is
    validated and transformed, and an `evaluator` (dotted path of a component) blesses the
    Trainer's model; without, the Trainer (`run_fn`) reads the examples. `pretrained_export`
    models have no data: `ExportPretrainedModel` writes the SavedModel. Validated data is
    checked against the curated `schema` for its source (`components.schemas`) and, run to
    run, for `drift` of the named features.
    """

    example_gen: str | None = None
    source_knob: str | None = None
    size_knob: str | None = None
    preprocessing_fn: str | None = None
    run_fn: str | None = None
    evaluator: str | None = None
    pretrained_export: bool = False
    schema: Callable[[str], str] | None = None  # source -> its curated schema's name
    # (feature, largest distance from the last run's distribution): a number is a Jensen-Shannon
    # divergence (numeric features), a DriftLimit names its comparator
    drift: tuple[tuple[str, float | DriftLimit], ...] = ()


@dataclasses.dataclass(frozen=True)
class ModelPipeline:
    """One model `genpipe run` builds."""

    name: str  # `genpipe run NAME`
    serving_name: str  # `contracts/`; fast-style: the prefix of `fast_style_<style>`
    help: str
    profiles: Mapping[str, Any]
    source_help: str
    check_source: Callable[[str, bool], str]  # (--source, must exist here) -> the source
    stages: Stages
    summarize: Callable[[RunSummary], list[str]]
    styled: bool = False  # takes --style (one served model per style)

    def served_name(self, style: str | None = None) -> str:
        """The served model's name: `serving_name`, or `<serving_name>_<style name>`."""
        if not self.styled:
            return self.serving_name
        from components.fast_style.trainer import style_name

        return f"{self.serving_name}_{style_name(style or DEFAULT_STYLE)}"

    def pipeline_name(self, profile_name: str, style: str | None = None) -> str:
        """One pipeline (and ML Metadata context) per served model and profile, so baselines
        compare like with like: `text-lm-smoke`, `fast-style-scream-demo`, ..."""
        return f"{self.served_name(style).replace('_', '-')}-{profile_name}"

    def data_knobs(self, profile: Any, source: Any) -> dict[str, Any]:
        """The example gen's data location and size (`Stages.source_knob`, `size_knob`)."""
        if self.stages.source_knob is None:
            return {}
        knobs = {self.stages.source_knob: source}
        if self.stages.size_knob is not None:
            knobs[self.stages.size_knob] = getattr(profile.ingestion, self.stages.size_knob)
        return knobs


def check_folder_source(
    source: str, must_exist: bool, *, allowed: str,
    contents: Callable[[str], object] | None = None,
) -> str:
    """`offline` or a folder path (absolute when it must exist here); ValueError otherwise.

    When the folder must exist here, `contents(folder)` may refuse it too (no usable document
    or image), before any component runs and ML Metadata records anything.
    """
    if source == OFFLINE:
        return source
    if not source or (must_exist and not Path(source).is_dir()):
        raise ValueError(f"--source {source!r} is neither 'offline' nor an existing folder; "
                         f"allowed: {allowed}")
    if not must_exist:
        return source
    folder = str(Path(source).resolve())
    if contents is not None:
        contents(folder)
    return folder


def usable_text_folder(folder: str) -> None:
    """Refuses a text folder with no usable document (`sources.reviews.check_text_folder`)."""
    from sources.reviews import check_text_folder  # only for local folders

    check_text_folder(folder)


def usable_image_folder(folder: str) -> None:
    """Refuses a photo folder with no readable image (`sources.images.check_image_folder`)."""
    from sources.images import check_image_folder  # imports Pillow: only for local folders

    check_image_folder(folder)


def no_source(model: str) -> Callable[[str, bool], str]:
    """The source check of a model without training data: only `offline` (the default)."""
    def check(source: str, must_exist: bool) -> str:
        if source not in (OFFLINE, ""):
            raise ValueError(f"--source {source!r} does not apply to {model}: it has no "
                             f"training data (allowed: {OFFLINE}, the default)")
        return OFFLINE
    return check


TEXT_SOURCE_HELP = ("offline (bundled movie snippets + clothing reviews, NOT IMDB), an aclImdb "
                    "folder, or a folder of .txt files")
PHOTO_SOURCE_HELP = "offline (bundled skimage + darknet photos) or a folder of JPEG/PNG photos"
# Mean intensity: inverted or washed-out images move it far (MNIST's is about 0.13).
IMAGE_STAGES = dict(example_gen="ImageExampleGen", source_knob="dataset", size_knob="max_images",
                    preprocessing_fn="components.images.transform.preprocessing_fn",
                    schema=lambda dataset: "digits" if is_digits(dataset) else "image_folder",
                    drift=((MEAN_INTENSITY, 0.1),))

# Vocabulary: the largest change in the share of any word among the reviews' distinct words. On
# the smoke train split the next 300 offline reviews moved it 0.005, the same 300 with every
# word's letters shuffled 0.024 (docs/operations.md, "Data checks").
VOCABULARY_DRIFT = DriftLimit(0.01, L_INFINITY)

MODELS: dict[str, ModelPipeline] = {model.name: model for model in (
    ModelPipeline(
        name="text", serving_name="text_lm",
        help="Transformer language model with temperature sampling (DLwP 12.1)",
        profiles=TEXT_PROFILES, source_help=TEXT_SOURCE_HELP,
        check_source=lambda source, must_exist: check_folder_source(
            source, must_exist, allowed=TEXT_SOURCE_HELP, contents=usable_text_folder),
        stages=Stages(example_gen="TextExampleGen", source_knob="source",
                      size_knob="max_documents",
                      preprocessing_fn="components.text.transform.preprocessing_fn",
                      run_fn="components.text.trainer.run_fn",
                      evaluator="components.text.evaluate.TextLmEvaluator",
                      schema=lambda source: "text_offline" if source == OFFLINE else "text_folder",
                      drift=((NUM_WORDS, 0.1), (WORDS, VOCABULARY_DRIFT))),
        summarize=summaries.text_lm,
    ),
    ModelPipeline(
        name="vae", serving_name="vae",
        help="variational autoencoder with a 2-D latent space of digits (DLwP 12.4)",
        profiles=VAE_PROFILES, source_help=DATASET_HELP,
        check_source=lambda source, must_exist: check_dataset(source, must_exist=must_exist),
        stages=Stages(**IMAGE_STAGES, run_fn="components.images.vae_trainer.run_fn",
                      evaluator="components.images.evaluate.VaeEvaluator"),
        summarize=summaries.vae,
    ),
    ModelPipeline(
        name="gan", serving_name="gan",
        help="DCGAN: digits offline, 64x64 faces from a CelebA folder (DLwP 12.5)",
        profiles=GAN_PROFILES, source_help=DATASET_HELP,
        check_source=lambda source, must_exist: check_dataset(source, must_exist=must_exist),
        stages=Stages(**IMAGE_STAGES, run_fn="components.images.gan_trainer.run_fn",
                      evaluator="components.images.evaluate.GanEvaluator"),
        summarize=summaries.gan,
    ),
    ModelPipeline(
        name="dream", serving_name="deepdream",
        help="DeepDream exported from ImageNet InceptionV3 weights (DLwP 12.2)",
        profiles=DREAM_PROFILES, source_help="none (no training data)",
        check_source=no_source("dream"), stages=Stages(pretrained_export=True),
        summarize=summaries.pretrained,
    ),
    ModelPipeline(
        name="style", serving_name="style_transfer",
        help="Gatys neural style transfer exported from ImageNet VGG19 weights (DLwP 12.3)",
        profiles=STYLE_PROFILES, source_help="none (no training data)",
        check_source=no_source("style"), stages=Stages(pretrained_export=True),
        summarize=summaries.pretrained,
    ),
    ModelPipeline(
        name="fast-style", serving_name="fast_style",
        help="fast style network trained on content photos for one --style image",
        profiles=FAST_STYLE_PROFILES, source_help=PHOTO_SOURCE_HELP,
        check_source=lambda source, must_exist: check_folder_source(
            source, must_exist, allowed=PHOTO_SOURCE_HELP, contents=usable_image_folder),
        stages=Stages(example_gen="ContentPhotoGen", source_knob="source",
                      run_fn="components.fast_style.trainer.run_fn"),
        summarize=summaries.fast_style, styled=True,
    ),
)}
MODEL_NAMES = tuple(MODELS)


def get_model(name: str) -> ModelPipeline:
    """The registered model `name`, or a ValueError naming the allowed ones."""
    if name not in MODELS:
        raise ValueError(f"MODEL {name!r} is unknown; allowed: {', '.join(MODEL_NAMES)}")
    return MODELS[name]


def parse_models(text: str) -> list[ModelPipeline]:
    """`all`, or comma-separated model names (`vae,gan`); ValueError naming every unknown one
    and the allowed names."""
    if text == ALL:
        return list(MODELS.values())
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in MODELS]
    if unknown or not any(names):
        shown = ", ".join(repr(name) for name in unknown) or repr(text)
        raise ValueError(f"MODEL {shown} is unknown; allowed: {ALL}, "
                         f"{', '.join(MODEL_NAMES)} or several joined by commas (vae,gan)")
    return [MODELS[name] for name in dict.fromkeys(names)]
