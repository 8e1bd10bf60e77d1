"""The text language-model pipeline (DLwP 12.1) as a pure `create_pipeline` factory.

TextExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> AnomalyGate
-> Transform -> Trainer -> TextLmEvaluator (with the latest blessed model as baseline)
and ServingValidator (every signature on TF Serving's loading path; the warmup requests)
-> Pusher (atomic, to `<serving_dir>/<version>/`, when both bless).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import stages
from pipeline.profiles import TEXT_PROFILES, TextProfile, get_profile
from pipeline.runner import RootLayout, RunOptions, RunSummary

MODEL_NAME = "text_lm"  # the serving name (`contracts.text_lm`)
PREPROCESSING_FN = "components.text.transform.preprocessing_fn"
RUN_FN = "components.text.trainer.run_fn"
SOURCE_HELP = "offline (the bundled review corpus, not IMDB), an aclImdb folder or a .txt folder"


def pipeline_name(profile: TextProfile) -> str:
    """One pipeline (and MLMD context) per profile, so baselines compare like with like."""
    return f"text-lm-{profile.name}"


def check_source(source: str, *, must_exist: bool) -> str:
    """`offline` or a folder path (absolute when it must exist here); ValueError otherwise."""
    if source == "offline":
        return source
    if not source or (must_exist and not Path(source).is_dir()):
        raise ValueError(
            f"--source {source!r} is neither 'offline' nor an existing folder; "
            f"allowed: {SOURCE_HELP}"
        )
    return str(Path(source).resolve()) if must_exist else source


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    serving_dir: str,
    profile: TextProfile,
    source: Any = "offline",
    max_documents: Any = None,
    baseline_metadata: Any = None,
    metadata_connection_config: Any = None,
    beam_pipeline_args: Sequence[str] = (),
    enable_cache: bool = True,
) -> Any:
    """The TFX pipeline of the text LM for `profile` (no side effects; returns a tfx Pipeline).

    `source` and `max_documents` (default: the profile's) may be RuntimeParameters;
    `baseline_metadata` is `stages.latest_blessed_model`'s `metadata`.
    """
    from tfx import v1 as tfx

    from components.text.evaluate import TextLmEvaluator
    from components.text.example_gen import TextExampleGen

    if max_documents is None:
        max_documents = profile.max_documents
    example_gen = TextExampleGen(source=source, max_documents=max_documents)
    validation = stages.data_validation(example_gen.outputs["examples"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=validation[1].outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config=profile.transform_config(),
        disable_statistics=True,  # StatisticsGen already describes the data
        disable_analyzer_cache=True,  # one span per run: nothing to reuse
    )
    transform.add_upstream_node(validation[-1])  # only data that passed the anomaly gate
    trainer = stages.trainer(RUN_FN, transform, profile.trainer_config())
    latest_blessed, baseline = stages.latest_blessed_model(pipeline_name, baseline_metadata)
    evaluator = TextLmEvaluator(
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        model=trainer.outputs["model"],
        baseline_blessing=baseline,
        **profile.evaluator_parameters(),
    )
    validate_and_push = stages.validate_and_push(
        trainer.outputs["model"], MODEL_NAME, serving_dir, evaluator.outputs["blessing"]
    )
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen, *validation, transform, trainer, latest_blessed, evaluator,
            *validate_and_push,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def build_pipeline(options: RunOptions, *, for_local_run: bool = True) -> Any:
    """The pipeline for `genpipe run text` options (`RunOptions`), laid out under the root."""
    profile = get_profile(TEXT_PROFILES, options.profile)
    source = check_source(options.source, must_exist=for_local_run)
    layout = RootLayout.for_run(options.root, for_local_run)
    name = pipeline_name(profile)
    knobs = stages.knobs(for_local_run, source=source, max_documents=profile.max_documents)
    return create_pipeline(
        pipeline_name=name,
        pipeline_root=layout.pipeline_root(name),
        serving_dir=layout.serving_dir(MODEL_NAME),
        profile=profile,
        **knobs,
        baseline_metadata=stages.baseline_metadata(for_local_run),
        metadata_connection_config=layout.metadata_config() if for_local_run else None,
        beam_pipeline_args=options.beam_pipeline_args,
        enable_cache=options.enable_cache,
    )


def summarize(summary: RunSummary) -> list[str]:
    """Human-readable results of a run: data counts, perplexities, blessings, pushed version."""
    lines = [summary.counts_line()]
    examples = summary.output("TextExampleGen", "examples").properties
    if examples["source"] == "offline":
        lines.append("source: the offline corpus (Rotten Tomatoes snippets + clothing reviews; "
                     "not IMDB: pass an aclImdb folder with --source for the book's data)")
    lines.append(
        "data: {documents_read} documents read, {undecodable_documents} undecodable, "
        "{empty_documents} empty, {duplicate_documents} duplicates dropped; "
        "{train_examples} train / {eval_examples} eval examples".format(**examples)
    )
    blessing = summary.output("TextLmEvaluator", "blessing").properties
    lines.append(f"held-out perplexity {blessing['perplexity']:.1f} "
                 f"(unigram baseline {blessing['unigram_perplexity']:.1f}); "
                 f"{blessing['blessing_message']}")
    return [*lines, *stages.serving_lines(summary)]
