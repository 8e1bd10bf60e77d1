"""The run-summary lines of each model's pipeline, read back from ML Metadata (`RunSummary`).

Every function takes the summary of one run and returns the lines `genpipe run` prints under
it; `pipeline.registry` names the one each model uses.
"""

from __future__ import annotations

import json
import os

from pipeline.runner import RunSummary
from pipeline.stages import serving_lines


def text_lm(summary: RunSummary) -> list[str]:
    """Data counts, perplexities, blessings, pushed version."""
    lines = [summary.counts_line()]
    examples = summary.output("TextExampleGen", "examples").properties
    if examples["source"] == "offline":
        lines.append("source: the offline corpus (Rotten Tomatoes snippets + clothing reviews; "
                     "not IMDB: pass an aclImdb folder with --source for the book's data)")
    lines.append(
        "data: {documents_read} documents read, {undecodable_documents} undecodable, "
        "{oversized} over the size limit, {empty_documents} empty, {duplicate_documents} "
        "duplicates dropped; {train_examples} train / {eval_examples} eval examples".format(
            oversized=examples.get("oversized_documents", 0), **examples)  # 0: older runs
    )
    blessing = summary.output("TextLmEvaluator", "blessing").properties
    lines.append(f"held-out perplexity {blessing['perplexity']:.1f} "
                 f"(unigram baseline {blessing['unigram_perplexity']:.1f}); "
                 f"{blessing['blessing_message']}")
    return [*lines, *serving_lines(summary)]


def _images(summary: RunSummary, metric_line: str, evaluator: str) -> list[str]:
    """Component states, data counts, `metric_line`, the blessings and where it is served."""
    lines = [summary.counts_line()]
    examples = summary.output("ImageExampleGen", "examples").properties
    lines.append(
        "data: {source} as {image_shape} images: {images_read} read, {corrupt_images} "
        "unreadable skipped; {train_examples} train / {eval_examples} eval examples".format(
            **examples)
    )
    blessing = summary.output(evaluator, "blessing").properties
    lines.append(metric_line.format(**blessing))
    lines.append(blessing["blessing_message"])
    return [*lines, *serving_lines(summary)]


def vae(summary: RunSummary) -> list[str]:
    """Data counts, held-out negative ELBO, blessing, pushed version."""
    return _images(summary, "held-out negative ELBO {negative_elbo:.1f} nats per image "
                   "({eval_images} images)", "VaeEvaluator")


def gan(summary: RunSummary) -> list[str]:
    """Data counts, KID (and on digits the classifier scores) of the trained and of an
    untrained generator, blessing, pushed version."""
    lines = _images(summary, "KID {kid:.4f} (untrained generator {untrained_kid:.4f}; "
                    "{kid_images} images, InceptionV3 at {kid_image_size} px)", "GanEvaluator")
    blessing = summary.output("GanEvaluator", "blessing").properties
    if "classifier_score" in blessing:
        lines.insert(3, "digit classifier (accuracy {classifier_accuracy:.3f}): score "
                     "{classifier_score:.2f} (untrained {untrained_classifier_score:.2f}), "
                     "Frechet distance {classifier_fid:.1f} (untrained "
                     "{untrained_classifier_fid:.1f})".format(**blessing))
    return lines


def pretrained(summary: RunSummary) -> list[str]:
    """Weights used, export limits, the validation call and the pushed version."""
    model = summary.output("ExportPretrainedModel", "model").properties
    return [
        summary.counts_line(),
        f"{model['model_name']} ({model['signature']}) from ImageNet weights: {model['weights']}",
        f"export limits: {model['limits']}",
        *serving_lines(summary),
    ]


def fast_style(summary: RunSummary) -> list[str]:
    """Content crops, training losses, the validation call and the pushed version."""
    examples = summary.output("ContentPhotoGen", "examples").properties
    lines = [
        summary.counts_line(),
        "content: {photos_read} photos ({source}), {train_examples} train / {eval_examples} "
        "eval crops of {image_shape}".format(**examples),
    ]
    model = summary.output("Trainer", "model_run")
    metrics_path = os.path.join(model.uri, "metrics.json")
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
        lines.append(f"style {metrics['style']}; {metrics['steps']} steps; perceptual loss "
                     f"{metrics['train_loss']:.3f} (mean over training), "
                     f"held-out {metrics['eval_loss']:.3f} (after)")
    return [*lines, *serving_lines(summary)]
