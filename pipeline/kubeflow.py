"""Kubeflow Pipelines: compile a genpipe pipeline into a PipelineSpec that open-source KFP v2 and
Vertex AI Pipelines both run, then submit it or schedule it.

The compile is TFX's KubeflowV2DagRunner (PipelineSpec schema 2.1.0) plus what both backends
need: every executor a container or an importer (the last-blessed lookup and the drift
baseline's are the `LastBlessedModel` and `PreviousStatistics` container components, never
cached), defaults for the runtime parameters (`stages.knobs`: data location and sizes,
`baseline_metadata`), the root as `defaultPipelineRoot`, and accelerators on the Trainers when
asked. `.yaml` is the PipelineSpec the kfp client uploads; `.json` is TFX's PipelineJob (spec +
runtime config) for Vertex.
Submitting uses `kfp.Client` (a run, or a recurring run: cron, at most one at a time, no
catch-up) or, for Vertex, `aiplatform.PipelineJob` and its schedules. TFX, kfp and aiplatform
are imported inside the functions (slow imports).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
RUNNABLE_EXECUTORS = ("container", "importer")  # all open-source KFP v2 runs
DEFAULT_EXPERIMENT = "genpipe"
IMAGE_HELP = ("the container image every component runs, pushed where the cluster pulls "
              "from; `make image` builds the Dockerfile as genpipe:<git commit>")
_CASTS = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "STRING": str}


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """An accelerator request for the Trainers: `nvidia.com/gpu` (open-source KFP: a Kubernetes
    resource name) or a Vertex type such as `NVIDIA_TESLA_T4`, and how many."""

    type: str
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Accelerator:
        """`TYPE[:COUNT]`; ValueError naming `--accelerator` otherwise."""
        kind, _, count = text.rpartition(":") if ":" in text else (text, "", "1")
        if not kind or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--accelerator {text!r}: expected TYPE[:COUNT] with COUNT >= 1, "
                             "e.g. nvidia.com/gpu:1 (Kubeflow) or NVIDIA_TESLA_T4:1 (Vertex)")
        return cls(kind, int(count))


def check_spec_path(path: str, option: str = "--compile-only") -> None:
    if not path.endswith(SPEC_SUFFIXES):
        raise ValueError(f"{option} {path!r}: the file name must end with one of "
                         f"{', '.join(SPEC_SUFFIXES)} (.yaml: the PipelineSpec the kfp client "
                         "uploads; .json: TFX's PipelineJob, for Vertex)")


def check_image(image: str | None) -> str:
    if not image:
        raise ValueError(f"--image is required for --compile-only: {IMAGE_HELP}")
    return image


def runtime_parameters(pipeline: Any) -> dict[str, Any]:
    """The RuntimeParameters of the pipeline's components, by name."""
    from tfx import v1 as tfx

    return {
        value.name: value
        for component in pipeline.components
        for value in component.exec_properties.values()
        if isinstance(value, tfx.dsl.experimental.RuntimeParameter)
    }


def foreign_executors(spec: Mapping[str, Any]) -> list[str]:
    """The executors of a PipelineSpec dict that are neither containers nor importers."""
    return sorted(
        name for name, executor in spec["deploymentSpec"]["executors"].items()
        if not set(RUNNABLE_EXECUTORS) & set(executor)
    )


def _request_accelerator(pipeline: Any, accelerator: Accelerator) -> None:
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx import v1 as tfx

    resources = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec
    request = resources(accelerator=resources.AcceleratorConfig(
        type=accelerator.type, count=accelerator.count))
    for component in pipeline.components:
        if isinstance(component, tfx.components.Trainer):
            component.with_platform_config(request)


def compile_pipeline(pipeline: Any, output_file: str, image: str,
                     accelerator: Accelerator | None = None) -> dict[str, Any]:
    """Writes the spec of `pipeline` to `output_file` (`.yaml` or `.json`); returns the
    PipelineSpec dict. ValueError for a bad file name, a missing image, or an executor open-source
    KFP cannot run."""
    from tfx import v1 as tfx

    from pipeline.stages import UNCACHED

    check_spec_path(output_file)
    check_image(image)
    if accelerator is not None:
        _request_accelerator(pipeline, accelerator)
    parameters = runtime_parameters(pipeline)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image, use_pipeline_spec_2_1=True),
    )
    job = runner.run(pipeline, parameter_values={name: p.default for name, p in
                                                 parameters.items()}, write_out=False)
    spec = job["pipelineSpec"]
    for name, parameter in parameters.items():
        definition = spec["root"]["inputDefinitions"]["parameters"][name]
        definition.update(defaultValue=parameter.default, isOptional=True)
    spec["defaultPipelineRoot"] = pipeline.pipeline_info.pipeline_root
    for task in UNCACHED:  # a cached lookup would keep an old baseline
        spec["root"]["dag"]["tasks"].get(task, {}).pop("cachingOptions", None)
    foreign = foreign_executors(spec)
    if foreign:
        raise ValueError(f"executors {foreign} are neither container nor importer executors; "
                         "open-source KFP v2 runs only those")
    path = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        if path.endswith(".json"):
            json.dump(job, handle, indent=1, sort_keys=True)
        else:
            handle.write(f"# genpipe pipeline {spec['pipelineInfo']['name']}: Kubeflow "
                         f"PipelineSpec {spec['schemaVersion']} ({spec['sdkVersion']}), "
                         f"image {image}\n")
            yaml.safe_dump(spec, handle, sort_keys=True)
    return spec


def load_spec(path: str) -> dict[str, Any]:
    """The PipelineSpec dict of a compiled file (`.yaml`: the spec; `.json`: a PipelineJob)."""
    check_spec_path(path, "SPEC")
    try:
        with open(path, encoding="utf-8") as handle:
            spec = (json.load(handle).get("pipelineSpec") if path.endswith(".json")
                    else next(yaml.safe_load_all(handle), None))
    except OSError as error:
        raise ValueError(f"SPEC {path!r}: {error.strerror}") from None
    except (ValueError, yaml.YAMLError) as error:
        raise ValueError(f"SPEC {path!r} is not JSON/YAML: {error}") from None
    if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
        raise ValueError(f"SPEC {path!r} is not a compiled pipeline spec (genpipe run MODEL "
                         "--compile-only FILE.yaml --image IMAGE writes one)")
    return spec


def parse_params(spec: Mapping[str, Any], pairs: Sequence[str]) -> dict[str, Any]:
    """`NAME=VALUE` pairs typed by the spec's root parameters; ValueError naming `--param`."""
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    values = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE")
        if name not in declared:
            raise ValueError(f"--param {name!r} is not a parameter of this pipeline; allowed: "
                             f"{', '.join(sorted(declared)) or 'none'}")
        cast = _CASTS.get(declared[name].get("parameterType"), str)
        try:
            values[name] = cast(text)
        except ValueError:
            raise ValueError(f"--param {name}={text!r}: expected {cast.__name__}") from None
    return values


def cron_fields(cron: str) -> list[str]:
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"--cron {cron!r}: expected 5 fields (minute hour day month weekday, "
                         "UTC) or 6 with seconds first")
    return fields


def kfp_cron(cron: str) -> str:
    """The 6-field cron (seconds first) of KFP's recurring runs."""
    fields = cron_fields(cron)
    return " ".join(["0", *fields] if len(fields) == 5 else fields)


def vertex_cron(cron: str) -> str:
    """The 5-field cron Vertex schedules take (a 6-field one must fire at second 0)."""
    fields = cron_fields(cron)
    if len(fields) == 6:
        if fields[0] != "0":
            raise ValueError(f"--cron {cron!r}: Vertex schedules have no seconds field; "
                             "use second 0 or 5 fields")
        fields = fields[1:]
    return " ".join(fields)


def kfp_client(host: str) -> Any:
    import warnings

    import kfp

    with warnings.catch_warnings():  # "only works with Kubeflow Pipeline v2.0.0-beta.2 and later"
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host)


def submit_kfp(spec_path: str, host: str, params: Mapping[str, Any], run_name: str,
               experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Creates a run of the compiled `.yaml` on the KFP at `host`; returns its run id."""
    result = kfp_client(host).create_run_from_pipeline_package(
        spec_path, arguments=dict(params), run_name=run_name, experiment_name=experiment)
    return result.run_id


def schedule_kfp(spec_path: str, host: str, params: Mapping[str, Any], name: str, cron: str,
                 experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Creates a recurring run (KFP cron, at most one run at a time, no catch-up); returns its
    id."""
    client = kfp_client(host)
    experiment_id = client.create_experiment(name=experiment).experiment_id
    recurring = client.create_recurring_run(
        experiment_id=experiment_id, job_name=name, cron_expression=kfp_cron(cron),
        max_concurrency=1, no_catchup=True, params=dict(params),
        pipeline_package_path=spec_path,
    )
    return recurring.recurring_run_id


def vertex_job(spec_path: str, project: str, region: str, params: Mapping[str, Any],
               display_name: str, **init: Any) -> Any:
    """An `aiplatform.PipelineJob` of the compiled spec; `init` goes to `aiplatform.init`
    (e.g. api_endpoint, api_transport, credentials)."""
    from google.cloud import aiplatform

    aiplatform.init(project=project, location=region, **init)
    return aiplatform.PipelineJob(display_name=display_name, template_path=spec_path,
                                  parameter_values=dict(params), project=project,
                                  location=region)


def submit_vertex(job: Any) -> str:
    """Submits the PipelineJob; returns its resource name."""
    job.submit()
    return job.resource_name


def schedule_vertex(job: Any, name: str, cron: str) -> str:
    """Creates a Vertex schedule of the job (at most one run at a time); returns its name."""
    schedule = job.create_schedule(cron=vertex_cron(cron), display_name=name,
                                   max_concurrent_run_count=1)
    return schedule.resource_name
