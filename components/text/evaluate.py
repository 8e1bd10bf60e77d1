"""Evaluation component of the text LM: held-out perplexity, a unigram baseline and the blessing.

The model and a unigram LM built from the training split's target counts are scored by the same
`models.text.metrics.perplexity` (padding masked) on the transformed eval split. The model is
blessed (a ModelBlessing the Pusher accepts) when every criterion holds:
- perplexity < `perplexity_threshold`;
- perplexity <= `max_unigram_ratio` x unigram perplexity (0 turns this off);
- perplexity <= (1 + `baseline_tolerance`) x the perplexity stored on the latest blessing
  (from a `LatestBlessedModelStrategy` resolver), when there is one.
A cached re-run scores the same model again (it is then its own baseline); the Pusher
(`components.push`) does not push a model identical to the latest pushed version again.

Results: `metrics.json` and custom properties on the ModelEvaluation artifact, and the decision
(`blessed`, `current_model_id`, `perplexity`, `blessing_message`, ...) on the ModelBlessing
(`components.common.evaluation`).
"""

# No `from __future__ import annotations`: the @component decorator reads the real type hints.

import dataclasses
import os

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

PERPLEXITY = "perplexity"
UNIGRAM_PERPLEXITY = "unigram_perplexity"


@dataclasses.dataclass(frozen=True)
class Criteria:
    """When a model is good enough to push."""

    perplexity_threshold: float
    baseline_tolerance: float = 0.05
    max_unigram_ratio: float = 1.0  # 0: no comparison with the unigram baseline


def blessing_decision(
    perplexity: float,
    unigram_perplexity: float,
    baseline_perplexity: float | None,
    criteria: Criteria,
) -> tuple[bool, str]:
    """(blessed, message): the message names every criterion that failed, or all that passed."""
    checks = [
        common.Check(
            perplexity < criteria.perplexity_threshold,
            f"perplexity {perplexity:.2f} < threshold {criteria.perplexity_threshold:g}",
        )
    ]
    if criteria.max_unigram_ratio > 0:
        checks.append(common.at_most(
            "perplexity", perplexity, criteria.max_unigram_ratio * unigram_perplexity,
            f"{criteria.max_unigram_ratio:g} x unigram perplexity {unigram_perplexity:.2f} =",
            fmt=".2f",
        ))
    checks.append(common.no_worse_than_baseline(
        "perplexity", perplexity, baseline_perplexity, criteria.baseline_tolerance, fmt=".2f"
    ))
    return common.decide(checks)


def score_model(
    examples_uri_train: str, examples_uri_eval: str, transform_uri: str, model_uri: str,
    batch_size: int,
) -> dict[str, float | int]:
    """Held-out perplexity of the trained LM and of the unigram baseline, with token counts."""
    import keras
    import tensorflow_transform as tft

    from components.text.data import keras_model_path, lm_dataset, target_counts, vocabulary
    from models.text.lm import build_unigram_lm  # also registers the LM's layers for loading
    from models.text.metrics import perplexity

    transform_output = tft.TFTransformOutput(transform_uri)
    vocab_size = len(vocabulary(transform_output))
    sequence_length = transform_output.transformed_feature_spec()["inputs"].shape[0]
    held_out = lm_dataset([os.path.join(examples_uri_eval, "*")], transform_output, batch_size)
    train = lm_dataset([os.path.join(examples_uri_train, "*")], transform_output, batch_size)

    model = keras.saving.load_model(keras_model_path(model_uri), compile=False)
    train_counts = target_counts(train, vocab_size)
    unigram = build_unigram_lm(train_counts, sequence_length)
    return {
        PERPLEXITY: perplexity(model, held_out),
        UNIGRAM_PERPLEXITY: perplexity(unigram, held_out),
        "eval_tokens": int(target_counts(held_out, vocab_size).sum()),
        "train_tokens": int(train_counts.sum()),
        "vocab_size": vocab_size,
        "sequence_length": sequence_length,
    }


@component
def TextLmEvaluator(  # noqa: N802 (TFX component names are classes)
    examples: InputArtifact[Examples],
    transform_graph: InputArtifact[TransformGraph],
    model: InputArtifact[Model],
    evaluation: OutputArtifact[ModelEvaluation],
    blessing: OutputArtifact[ModelBlessing],
    baseline_blessing: InputArtifact[ModelBlessing] = None,
    perplexity_threshold: Parameter[float] = 1000.0,
    baseline_tolerance: Parameter[float] = 0.05,
    max_unigram_ratio: Parameter[float] = 1.0,
    batch_size: Parameter[int] = 64,
):
    """Scores the model on the transformed eval split and blesses it (see the module docstring)."""
    criteria = Criteria(perplexity_threshold, baseline_tolerance, max_unigram_ratio)
    baseline_id, baseline_perplexity = common.baseline_metric(baseline_blessing, PERPLEXITY)
    metrics = score_model(
        artifact_utils.get_split_uri([examples], "train"),
        artifact_utils.get_split_uri([examples], "eval"),
        transform_graph.uri, model.uri, batch_size,
    )
    blessed, message = blessing_decision(
        metrics[PERPLEXITY], metrics[UNIGRAM_PERPLEXITY], baseline_perplexity, criteria
    )
    logging.info("Text LM evaluation of model %d: %s", model.id, message)
    print(f"  {message}", flush=True)
    common.record(
        evaluation=evaluation, blessing=blessing, model=model, metrics=metrics,
        blessed=blessed, message=message,
        report={
            "baseline_model_id": baseline_id,
            "baseline_perplexity": baseline_perplexity,
            "criteria": dataclasses.asdict(criteria),
        },
        blessing_metrics=(PERPLEXITY, UNIGRAM_PERPLEXITY),
    )
