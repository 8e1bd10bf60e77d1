"""The registry of model pipelines and its one factory: settings declared once and read back by
the components, `genpipe run MODEL,MODEL|all` and `--beam_pipeline_args`. Pipelines are only
built here (no run), except the `dream,style` run of the session fixture and one cached rerun."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from pipeline.cli import build_parser, main
from pipeline.profiles import PROFILE_NAMES
from pipeline.registry import MODEL_NAMES, MODELS, parse_models
from pipeline.runner import DEFAULT_BEAM_ARGS

# Pipeline names existing roots hold (their ML Metadata history and cache).
PIPELINE_NAMES = {
    "text": "text-lm-demo", "vae": "vae-demo", "gan": "gan-demo", "dream": "deepdream-demo",
    "style": "style-transfer-demo", "fast-style": "fast-style-starry-night-demo",
}
MULTI_PROCESSING = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def test_every_model_has_every_profile_and_keeps_its_pipeline_name():
    assert set(MODEL_NAMES) == set(PIPELINE_NAMES)
    for name, model in MODELS.items():
        assert tuple(model.profiles) == PROFILE_NAMES, name
        assert model.pipeline_name("demo") == PIPELINE_NAMES[name]
    assert MODELS["fast-style"].pipeline_name("smoke", "scream") == "fast-style-scream-smoke"


def test_registry_and_profiles_import_no_tensorflow_or_tfx():
    code = ("import sys, pipeline.registry, pipeline.profiles, pipeline.run_cli; "
            "print(sorted(m for m in ('tensorflow', 'tfx', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def _trainer_settings_classes() -> dict[str, type]:
    """The classes each Trainer's run_fn rebuilds its custom_config with."""
    from components.fast_style.trainer import FastStyleSettings
    from components.images.gan_trainer import GanTrainerSettings
    from components.images.vae_trainer import VaeTrainerSettings
    from components.text.trainer import TrainerSettings

    return {"text": TrainerSettings, "vae": VaeTrainerSettings, "gan": GanTrainerSettings,
            "fast-style": FastStyleSettings}


def test_trainers_read_back_the_very_settings_the_profiles_hold():
    from components.common.config import settings_from_config

    for name, cls in _trainer_settings_classes().items():
        for profile in MODELS[name].profiles.values():
            assert type(profile.trainer) is cls
            # custom_config travels as JSON: tuples become lists and come back as tuples
            config = json.loads(json.dumps(dataclasses.asdict(profile.trainer)))
            assert settings_from_config(cls, config) == profile.trainer


def test_parse_models_takes_all_and_comma_lists_and_names_unknown_ones():
    assert [m.name for m in parse_models("all")] == list(MODEL_NAMES)
    assert [m.name for m in parse_models("vae,gan,vae")] == ["vae", "gan"]
    with pytest.raises(ValueError, match=r"'nope', 'x' is unknown; allowed: all, text, vae"):
        parse_models("vae,nope,x")


@pytest.mark.parametrize(("argv", "message"), [
    (["vae,nope"], "MODEL 'nope' is unknown; allowed: all, " + ", ".join(MODEL_NAMES)),
    ([], "MODEL is missing; allowed: all"),
    (["vae,gan", "--style", "scream"], "--style applies only to fast-style"),
    (["vae,gan", "--compile-only", "x.yaml", "--image", "i"], "spec of one MODEL, not of vae"),
    (["vae", "--beam_pipeline_args", "direct_num_workers=2"], "--beam_pipeline_args "
     "direct_num_workers=2: Beam options look like --name=value"),
])
def test_bad_run_arguments_fail_up_front_naming_the_option(argv, message, tmp_path, capsys):
    assert main(["run", *argv, "--profile", "smoke", "--root", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing ran


@pytest.mark.parametrize(("model", "option", "files", "message"), [
    ("text", "--source", {}, "holds no documents"),
    ("text", "--source", {"a.txt": b"\xff\xfe\x00bad"}, "a.txt"),
    ("fast-style", "--source", {"a.png": b"not a png"}, "a.png"),
])
def test_unusable_source_folders_are_refused_before_anything_runs(model, option, files, message,
                                                                   tmp_path, capsys):
    source, root = tmp_path / "source", tmp_path / "root"
    source.mkdir()
    for name, content in files.items():
        (source / name).write_bytes(content)
    argv = ["run", model, option, str(source), "--profile", "smoke", "--root", str(root)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not root.exists() or list(root.iterdir()) == []  # no metadata store, no run folder


def _pipelines(*argv: str) -> dict[str, object]:
    from pipeline.run_cli import build_pipelines, selected_models

    args = build_parser().parse_args(["run", *argv])
    return {model.name: pipeline for model, pipeline in
            build_pipelines(args, selected_models(args))}


def test_beam_pipeline_args_reach_every_pipeline(tmp_path):
    root = ["--profile", "smoke", "--root", str(tmp_path)]
    default = _pipelines("text,dream", *root)
    assert [p.beam_pipeline_args for p in default.values()] == [list(DEFAULT_BEAM_ARGS)] * 2
    quoted = _pipelines("all", *root, "--beam_pipeline_args", " ".join(MULTI_PROCESSING))
    assert list(quoted) == list(MODEL_NAMES)
    for pipeline in quoted.values():
        assert pipeline.beam_pipeline_args == list(MULTI_PROCESSING)
    repeated = _pipelines("vae", *root, *(f"--beam_pipeline_args={a}" for a in MULTI_PROCESSING))
    assert repeated["vae"].beam_pipeline_args == list(MULTI_PROCESSING)


def test_components_get_their_part_of_the_profile_as_a_dict(tmp_path):
    from pipeline.profiles import with_settings

    pipelines = _pipelines("text,gan,fast-style", "--profile", "smoke", "--root", str(tmp_path),
                           "--style", "scream")
    components = {name: {c.id: c for c in p.components} for name, p in pipelines.items()}
    text, gan = MODELS["text"].profiles["smoke"], MODELS["gan"].profiles["smoke"]
    trainer = components["text"]["Trainer"].exec_properties["custom_config"]
    assert json.loads(trainer) == json.loads(json.dumps(dataclasses.asdict(text.trainer)))
    transform = components["text"]["Transform"].exec_properties["custom_config"]
    assert json.loads(transform) == dataclasses.asdict(text.transform)
    evaluator = components["gan"]["GanEvaluator"].exec_properties
    assert {k: evaluator[k] for k in dataclasses.asdict(gan.evaluator)} == \
        dataclasses.asdict(gan.evaluator)
    style = json.loads(components["fast-style"]["Trainer"].exec_properties["custom_config"])
    assert style["style"] == "scream" and style["filters"] == [8, 16, 32]
    # a changed setting reaches its component
    changed = with_settings(gan, "evaluator", max_kid=0.125)
    assert changed.evaluator.max_kid == 0.125 and changed.trainer == gan.trainer


def test_dream_style_ran_in_one_invocation_sharing_one_metadata_store(dream_style_smoke_root):
    import ml_metadata as mlmd

    output = dream_style_smoke_root.output
    assert "deepdream-smoke finished" in output and "style-transfer-smoke finished" in output
    assert "2 of 2 pipelines succeeded" in output
    store = mlmd.MetadataStore(dream_style_smoke_root.layout.metadata_config())
    names = {c.name for c in store.get_contexts_by_type("pipeline")}
    assert {"deepdream-smoke", "style-transfer-smoke"} <= names


def test_a_failing_model_is_reported_and_the_next_still_runs(dream_style_smoke_root, tmp_path,
                                                             capsys):
    """text fails in its ExampleGen (too few documents); dream, all cached, still runs."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(5):
        (docs / f"{i}.txt").write_text(f"only a few documents here, number {i}")
    code = main(["run", "text,dream", "--profile", "smoke", "--source", str(docs),
                 "--root", str(dream_style_smoke_root.root)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "pipeline text-lm-smoke failed" in err and "needs at least 101" in err
    assert "deepdream-smoke finished" in out and "3 components: 0 executed, 3 from cache" in out
    assert "1 of 2 pipelines succeeded; failed: text-lm-smoke" in out
