"""Kubeflow: compiled specs loaded by the kfp SDK's own loaders hold only container and importer
executors; submit and schedule requests of the kfp client and of aiplatform, recorded by a local
HTTP endpoint; the last-blessed and previous-statistics lookups against a real ML Metadata store.
No cluster runs here."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from pipeline.cli import main
from pipeline.registry import MODEL_NAMES

IMAGE = "registry.example/genpipe:0123abc"
ROOT = "gs://bucket/genpipe"
METADATA = "grpc://metadata-grpc-service.kubeflow:8080"
# The runtime parameters each model's compiled spec declares, with their (smoke) defaults.
PARAMETERS = {
    "text": {"source": "offline", "max_documents": 300, "baseline_metadata": METADATA},
    "vae": {"dataset": "mnist", "max_images": 300, "baseline_metadata": METADATA},
    "gan": {"dataset": "mnist", "max_images": 300, "baseline_metadata": METADATA},
    "dream": {},
    "style": {},
    "fast-style": {"source": "offline"},
}
EVALUATED = ("text", "vae", "gan")  # compared with the last blessed model and the last data


def compile_cli(model: str, path: Path, *extra: str) -> int:
    return main(["run", model, "--profile", "smoke", "--root", ROOT, "--compile-only", str(path),
                 "--image", IMAGE, *extra])


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every model's smoke pipeline compiled to .yaml through `genpipe run --compile-only`."""
    folder = tmp_path_factory.mktemp("specs")
    paths = {}
    for model in MODEL_NAMES:
        paths[model] = folder / f"{model}.yaml"
        assert compile_cli(model, paths[model]) == 0
    return paths


def spec_dict(path: Path) -> dict[str, Any]:
    """The spec as the kfp client reads it before an upload (its own loader)."""
    from google.protobuf import json_format
    from kfp.client.client import _extract_pipeline_yaml

    return json_format.MessageToDict(_extract_pipeline_yaml(str(path)).pipeline_spec)


@pytest.mark.parametrize("model", list(MODEL_NAMES))
def test_compiled_yaml_loads_with_kfp_and_has_only_container_executors(specs, model):
    from kfp.components import load_component_from_file

    spec = spec_dict(specs[model])
    executors = spec["deploymentSpec"]["executors"]
    kinds = {name: sorted(executor) for name, executor in executors.items()}
    assert all(kind in (["container"], ["importer"]) for kind in kinds.values()), kinds
    assert {executor["container"]["image"] for executor in executors.values()} == {IMAGE}
    assert spec["schemaVersion"] == "2.1.0"
    assert spec["defaultPipelineRoot"].startswith(f"{ROOT}/pipelines/")
    assert not any("resolver" in task for task in spec["root"]["dag"]["tasks"])
    component = load_component_from_file(str(specs[model]))  # the SDK's component loader too
    assert component.name == spec["pipelineInfo"]["name"]


@pytest.mark.parametrize("model", list(MODEL_NAMES))
def test_runtime_parameters_are_root_inputs_with_defaults(specs, model):
    spec = spec_dict(specs[model])
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    assert {name: d["defaultValue"] for name, d in declared.items()} == PARAMETERS[model]
    assert all(d["isOptional"] for d in declared.values())


@pytest.mark.parametrize("model", EVALUATED)
def test_evaluator_compares_with_the_uncached_last_blessed_lookup(specs, model):
    tasks = spec_dict(specs[model])["root"]["dag"]["tasks"]
    lookup = tasks["LastBlessedModel"]
    assert lookup["inputs"]["parameters"]["metadata"] == {
        "componentInputParameter": "baseline_metadata"}
    assert not lookup.get("cachingOptions", {}).get("enableCache")
    assert tasks["Trainer"]["cachingOptions"]["enableCache"]
    evaluator = next(task for name, task in tasks.items() if name.endswith("Evaluator"))
    baseline = evaluator["inputs"]["artifacts"]["baseline_blessing"]["taskOutputArtifact"]
    assert baseline == {"producerTask": "LastBlessedModel", "outputArtifactKey": "blessing"}


@pytest.mark.parametrize("model", EVALUATED)
def test_drift_baseline_is_the_uncached_previous_statistics_lookup(specs, model):
    spec = spec_dict(specs[model])
    tasks = spec["root"]["dag"]["tasks"]
    lookup = tasks["PreviousStatistics"]
    statistics = {"producerTask": "StatisticsGen", "outputArtifactKey": "statistics"}
    assert lookup["inputs"]["artifacts"]["statistics"]["taskOutputArtifact"] == statistics
    parameters = lookup["inputs"]["parameters"]
    assert parameters["metadata"] == {"componentInputParameter": "baseline_metadata"}
    assert parameters["pipeline_name"]["runtimeValue"]["constant"] == \
        spec["pipelineInfo"]["name"]
    gate = parameters["gate"]["runtimeValue"]["constant"]
    assert not lookup.get("cachingOptions", {}).get("enableCache")
    drift = tasks["DistributionValidator"]["inputs"]["artifacts"]
    assert drift["statistics"]["taskOutputArtifact"] == statistics
    assert drift["baseline_statistics"]["taskOutputArtifact"] == {
        "producerTask": "PreviousStatistics", "outputArtifactKey": "baseline"}
    pairs = tasks["DistributionValidator"]["inputs"]["parameters"]["include_split_pairs"]
    assert json.loads(pairs["runtimeValue"]["constant"]) == [["train", "train"]]
    gate_inputs = tasks[gate]["inputs"]["artifacts"]
    assert gate_inputs["drift"]["taskOutputArtifact"] == {
        "producerTask": "DistributionValidator", "outputArtifactKey": "anomalies"}
    assert gate_inputs["baseline"]["taskOutputArtifact"] == {
        "producerTask": "PreviousStatistics", "outputArtifactKey": "baseline"}
    executor = spec["deploymentSpec"]["executors"]["PreviousStatistics_executor"]["container"]
    assert "components.common.previous_statistics.PreviousStatistics_Executor" in \
        executor["args"]


def test_accept_drift_compiles_without_the_comparison():
    from pipeline.factory import build_pipeline
    from pipeline.registry import MODELS
    from pipeline.runner import RunOptions

    def ids(**options: Any) -> set[str]:
        pipeline = build_pipeline(MODELS["vae"], RunOptions(profile="smoke", root=ROOT,
                                                            **options), for_local_run=False)
        return {component.id for component in pipeline.components}

    compared = {"PreviousStatistics", "DistributionValidator"}
    assert compared <= ids() and "previous_statistics_resolver" not in ids()
    assert not compared & ids(accept_drift=True)
    assert {"SchemaGen", "AnomalyGate"} <= ids(accept_drift=True)


def test_data_location_and_size_reach_the_example_gen(specs):
    tasks = spec_dict(specs["text"])["root"]["dag"]["tasks"]
    parameters = tasks["TextExampleGen"]["inputs"]["parameters"]
    assert parameters["source"] == {"componentInputParameter": "source"}
    assert parameters["max_documents"] == {"componentInputParameter": "max_documents"}


def test_accelerator_is_requested_on_the_trainer_only(tmp_path):
    path = tmp_path / "text.yaml"
    assert compile_cli("text", path, "--accelerator", "nvidia.com/gpu:2") == 0
    executors = spec_dict(path)["deploymentSpec"]["executors"]
    assert executors["Trainer_executor"]["container"]["resources"]["accelerator"] == {
        "type": "nvidia.com/gpu", "count": "2"}
    assert not any("resources" in e["container"] for name, e in executors.items()
                   if name != "Trainer_executor")


def test_json_is_a_pipeline_job_with_the_same_spec(tmp_path, specs):
    path = tmp_path / "vae.json"
    assert compile_cli("vae", path) == 0
    job = json.loads(path.read_text())
    assert job["runtimeConfig"]["parameterValues"]["max_images"] == 300
    assert job["pipelineSpec"] == yaml.safe_load(specs["vae"].read_text())


@pytest.mark.parametrize(("args", "message"), [
    (["--compile-only", "t.yaml"], "--image is required for --compile-only"),
    (["--compile-only", "t.txt", "--image", IMAGE], "--compile-only 't.txt': the file name"),
    (["--compile-only", "t.yaml", "--image", IMAGE, "--accelerator", "gpu:0"], "--accelerator"),
    (["--image", IMAGE], "--image and --accelerator apply only with --compile-only"),
])
def test_bad_compile_options_are_refused_by_name(args, message, capsys):
    assert main(["run", "text", "--profile", "smoke", "--root", ROOT, *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_image_error_names_make_image(capsys):
    assert main(["run", "vae", "--compile-only", "v.yaml"]) == 2
    assert "make image" in capsys.readouterr().err


@pytest.mark.parametrize("root", ["gs://bucket/genpipe", "s3://bucket/x", "hdfs://nn/x"])
def test_local_runs_refuse_url_roots(root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "text", "--profile", "smoke", "--root", root]) == 2
    err = capsys.readouterr().err
    assert f"--root {root!r}" in err and "--compile-only" in err
    assert list(tmp_path.iterdir()) == []  # nothing like ./gs:/bucket was created


# --- submit and schedule against a recording endpoint ------------------------------------------


class Recorder(ThreadingHTTPServer):
    """Records every request (method, path, query, JSON body) and answers the minimal JSON the
    kfp client (kfp-server-api v2beta1 models) and aiplatform's REST transport expect."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def posts(self, suffix: str) -> list[Any]:
        return [body for method, path, _, body in self.requests
                if method == "POST" and path.endswith(suffix)]


class _RecordingHandler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        url = urlsplit(self.path)
        self.server.requests.append((self.command, url.path, parse_qs(url.query), body))
        path, post = url.path, self.command == "POST"
        if path.endswith("/healthz"):
            answer = {"multi_user": False}
        elif path.endswith("/experiments"):
            answer = {"experiment_id": "exp-1", **body} if post else {}  # none yet: create
        elif path.endswith("/runs"):
            answer = {"run_id": "run-1", **body}
        elif path.endswith("/recurringruns"):
            answer = {"recurring_run_id": "recurring-1", **body}
        elif path.endswith("/pipelineJobs"):
            answer = {**body, "name": f"{path.split('/v1/')[1]}/job-1"}
        elif path.endswith("/schedules"):
            answer = {**body, "name": f"{path.split('/v1/')[1]}/schedule-1"}
        elif path.startswith("/storage/v1/b/"):  # aiplatform's "does the bucket exist"
            answer = {"name": path.rsplit("/", 1)[1]}
        else:
            answer = {}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


@pytest.fixture()
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_submit_creates_a_kfp_run_with_typed_parameters(specs, recorder, capsys):
    code = main(["kubeflow", "submit", str(specs["text"]), "--host", recorder.url,
                 "--param", "source=gs://bucket/texts", "--param", "max_documents=5000",
                 "--name", "nightly text"])
    assert code == 0, capsys.readouterr().err
    assert "created run run-1 of text-lm-smoke" in capsys.readouterr().out
    [experiment] = recorder.posts("/apis/v2beta1/experiments")
    assert experiment["display_name"] == "genpipe"
    [run] = recorder.posts("/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-1" and run["display_name"] == "nightly text"
    assert run["pipeline_spec"] == spec_dict(specs["text"])
    assert run["runtime_config"]["parameters"] == {"source": "gs://bucket/texts",
                                                   "max_documents": 5000}


def test_schedule_creates_a_recurring_run_one_at_a_time_without_catch_up(specs, recorder):
    assert main(["kubeflow", "schedule", str(specs["vae"]), "--host", recorder.url,
                 "--cron", "30 2 * * *", "--param", "max_images=1000"]) == 0
    [recurring] = recorder.posts("/apis/v2beta1/recurringruns")
    assert recurring["trigger"] == {"cron_schedule": {"cron": "0 30 2 * * *"}}
    assert recurring["max_concurrency"] == 1 and recurring["no_catchup"] is True
    assert recurring["mode"] == "ENABLE" and recurring["experiment_id"] == "exp-1"
    assert recurring["display_name"] == "vae-smoke"
    assert recurring["runtime_config"]["parameters"] == {"max_images": 1000}
    assert recurring["pipeline_spec"]["pipelineInfo"]["name"] == "vae-smoke"


def test_schedule_entry_exports_its_cron_and_name(specs, recorder, tmp_path, capsys):
    from pipeline.schedule import Entry, Schedules

    Schedules(str(tmp_path)).add(Entry(name="nightly-text", cron="0 3 * * 1-5",
                                       models=("text",), profile="smoke"))
    assert main(["kubeflow", "schedule", str(specs["text"]), "--host", recorder.url,
                 "--from-entry", "nightly-text", "--root", str(tmp_path)]) == 0
    [recurring] = recorder.posts("/apis/v2beta1/recurringruns")
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1-5"
    assert recurring["display_name"] == "nightly-text"

    Schedules(str(tmp_path)).add(Entry(name="demo-text", cron="0 4 * * *", models=("text",),
                                       profile="demo"))
    assert main(["kubeflow", "schedule", str(specs["text"]), "--host", recorder.url,
                 "--from-entry", "demo-text", "--root", str(tmp_path)]) == 2
    assert "runs profile 'demo'" in capsys.readouterr().err
    assert len(recorder.posts("/apis/v2beta1/recurringruns")) == 1


@pytest.mark.parametrize(("args", "message"), [
    ([], "give either --host URL (Kubeflow Pipelines) or --vertex"),
    (["--host", "http://h", "--param", "epochs=3"], "--param 'epochs' is not a parameter"),
    (["--host", "http://h", "--param", "max_documents=many"], "max_documents='many': expected"),
    (["--vertex", "--project", "p"], "--vertex needs --project and --region"),
])
def test_bad_submit_options_are_refused_by_name(specs, args, message, capsys):
    assert main(["kubeflow", "submit", str(specs["text"]), *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--host", "http://h"], "give either --cron or --from-entry NAME --root ROOT"),
    (["--host", "http://h", "--cron", "daily"], "--cron 'daily': expected 5 fields"),
    (["--vertex", "--project", "p", "--region", "r", "--cron", "*/30 * * * * *"],
     "Vertex schedules have no seconds field"),
    (["--host", "http://h", "--from-entry", "nightly"], "--from-entry needs --root"),
])
def test_bad_schedule_options_are_refused_by_name(specs, args, message, capsys):
    assert main(["kubeflow", "schedule", str(specs["text"]), *args]) == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_host_is_reported_not_raised(specs, capsys):
    assert main(["kubeflow", "submit", str(specs["text"]), "--host", "http://127.0.0.1:9"]) == 1
    assert "creating the run on http://127.0.0.1:9 failed" in capsys.readouterr().err


def test_kfp_cron_and_vertex_cron():
    from pipeline.kubeflow import kfp_cron, vertex_cron

    assert kfp_cron("0 3 * * *") == "0 0 3 * * *"
    assert kfp_cron("*/30 * * * * *") == "*/30 * * * * *"
    assert vertex_cron("0 0 3 * * *") == "0 3 * * *"
    with pytest.raises(ValueError, match="Vertex schedules have no seconds"):
        vertex_cron("*/30 * * * * *")
    with pytest.raises(ValueError, match="--cron"):
        kfp_cron("daily")


def test_vertex_submit_and_schedule_requests(specs, recorder, monkeypatch):
    """aiplatform's own REST requests, sent to the recorder (api_endpoint, anonymous
    credentials; its bucket check through STORAGE_EMULATOR_HOST)."""
    from google.auth.credentials import AnonymousCredentials

    from pipeline import kubeflow

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", recorder.url)
    # The bucket check asks Resource Manager (googleapis.com, unreachable here: a minute of
    # retries) for the project's number; that one call is answered here instead.
    from google.cloud.aiplatform.utils import resource_manager_utils

    monkeypatch.setattr(resource_manager_utils, "get_project_number", lambda *a, **k: 123)
    job = kubeflow.vertex_job(
        str(specs["gan"]), "proj", "europe-west4", {"max_images": 2000}, "gan nightly",
        api_endpoint=recorder.url, api_transport="rest", credentials=AnonymousCredentials())
    parent = "projects/proj/locations/europe-west4"
    assert kubeflow.submit_vertex(job) == f"{parent}/pipelineJobs/job-1"
    [created] = recorder.posts(f"/v1/{parent}/pipelineJobs")
    assert created["displayName"] == "gan nightly"
    assert created["runtimeConfig"]["parameterValues"]["max_images"] == 2000
    assert created["runtimeConfig"]["gcsOutputDirectory"].startswith(f"{ROOT}/pipelines/gan-")
    assert created["pipelineSpec"]["deploymentSpec"] == spec_dict(specs["gan"])["deploymentSpec"]

    assert kubeflow.schedule_vertex(job, "gan-nightly", "0 0 3 * * *") == \
        f"{parent}/schedules/schedule-1"
    [schedule] = recorder.posts(f"/v1/{parent}/schedules")
    assert schedule["cron"] == "0 3 * * *" and schedule["maxConcurrentRunCount"] == "1"
    assert schedule["createPipelineJobRequest"]["pipelineJob"]["runtimeConfig"][
        "parameterValues"]["max_images"] == 2000


# --- the last-blessed lookup on a real ML Metadata store ---------------------------------------


def _store(path: Path) -> Any:
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    modes = metadata_store_pb2.SqliteMetadataSourceConfig
    config.sqlite.connection_mode = modes.READWRITE_OPENCREATE
    return mlmd.MetadataStore(config)


def _blessings(store: Any, type_name: str, context_ids: list[int],
               properties: list[dict[str, Any]]) -> list[int]:
    """Puts ModelBlessing artifacts with `properties` (ints, floats) attributed to contexts."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    type_id = store.put_artifact_type(pb.ArtifactType(name=type_name))
    artifacts = []
    for number, values in enumerate(properties):
        artifact = pb.Artifact(type_id=type_id, uri=f"/blessings/{type_name}/{number}")
        for key, value in values.items():
            field = "int_value" if isinstance(value, int) else "double_value"
            setattr(artifact.custom_properties[key], field, value)
        artifacts.append(artifact)
    ids = store.put_artifacts(artifacts)
    store.put_attributions_and_associations(
        [pb.Attribution(context_id=c, artifact_id=a) for c in context_ids for a in ids], [])
    return ids


def test_lookup_finds_the_latest_evaluator_blessing_of_tfx_and_kfp_stores(tmp_path):
    from ml_metadata.proto import metadata_store_pb2 as pb

    from components.common.last_blessed import LOOKUP, find_last_blessed

    store = _store(tmp_path / "m.sqlite")
    tfx_type = store.put_context_type(pb.ContextType(name="pipeline"))
    tfx_ids = store.put_contexts([pb.Context(type_id=tfx_type, name="text-lm-smoke"),
                                  pb.Context(type_id=tfx_type, name="vae-smoke")])
    blessed, _, _ = _blessings(store, "ModelBlessing", [tfx_ids[0]], [
        {"blessed": 1, "perplexity": 80.0}, {"blessed": 0, "perplexity": 70.0},
        {"blessed": 1, LOOKUP: 1, "perplexity": 60.0},  # a copy made by the lookup itself
    ])
    assert find_last_blessed(store, "text-lm-smoke").id == blessed
    assert find_last_blessed(store, "vae-smoke") is None
    assert find_last_blessed(store, "never-ran") is None

    # Kubeflow v2: a system.Pipeline context, runs as its children, properties as doubles.
    pipeline_type = store.put_context_type(pb.ContextType(name="system.Pipeline"))
    run_type = store.put_context_type(pb.ContextType(name="system.PipelineRun"))
    [kfp_pipeline] = store.put_contexts([pb.Context(type_id=pipeline_type, name="gan-smoke")])
    [run] = store.put_contexts([pb.Context(type_id=run_type, name="run-7")])
    store.put_parent_contexts([pb.ParentContext(child_id=run, parent_id=kfp_pipeline)])
    first, second = _blessings(store, "tfx.ModelBlessing", [run], [
        {"blessed": 1.0, "kid": 0.2}, {"blessed": 1.0, "kid": 0.1}])
    assert find_last_blessed(store, "gan-smoke").id == max(first, second)


def test_lookup_component_outputs_a_copy_or_a_placeholder_the_evaluators_read(tmp_path):
    from ml_metadata.proto import metadata_store_pb2 as pb
    from tfx.types import standard_artifacts

    from components.common.evaluation import baseline_metric
    from components.common.last_blessed import LastBlessedModel

    path = tmp_path / "m.sqlite"
    store = _store(path)
    context_type = store.put_context_type(pb.ContextType(name="pipeline"))
    [context] = store.put_contexts([pb.Context(type_id=context_type, name="text-lm-smoke")])
    _blessings(store, "ModelBlessing", [context], [
        {"blessed": 1, "current_model_id": 42, "perplexity": 81.5}])

    def run_lookup(name: str, metadata: str) -> Any:
        blessing = standard_artifacts.ModelBlessing()
        blessing.uri = str(tmp_path / name / "blessing")
        LastBlessedModel.EXECUTOR_SPEC.executor_class().Do(
            {}, {"blessing": [blessing]}, {"pipeline_name": name, "metadata": metadata})
        return blessing

    copy = run_lookup("text-lm-smoke", f"sqlite://{path}")
    assert baseline_metric(copy, "perplexity") == (42, 81.5)
    assert copy.get_int_custom_property("last_blessed_lookup") == 1
    assert json.loads((Path(copy.uri) / "last_blessed.json").read_text())["found"] is True

    for placeholder in (run_lookup("vae-smoke", f"sqlite://{path}"), run_lookup("vae-smoke", "")):
        assert baseline_metric(placeholder, "negative_elbo") == (None, None)
        assert placeholder.get_int_custom_property("blessed") == 0
    with pytest.raises(ValueError, match="allowed: grpc://HOST:PORT"):
        run_lookup("vae-smoke", "mysql://db")


# --- the previous-statistics lookup (the drift baseline) on a real ML Metadata store -----------

SPLITS = ("train", "eval")


class _Runs:
    """Records runs of one pipeline in an ML Metadata store the way LocalDagRunner (TFX) or
    Kubeflow v2's launcher does: each execution in the pipeline and run contexts (Kubeflow: the
    run a child of the pipeline, the task named by `task_name`; TFX: also the component's node
    context), its outputs attributed to them."""

    def __init__(self, store: Any, name: str, kubeflow: bool) -> None:
        from ml_metadata.proto import metadata_store_pb2 as pb

        self.store, self.name, self.kubeflow = store, name, kubeflow
        statistics = pb.ArtifactType(name="tfx.ExampleStatistics" if kubeflow
                                     else "ExampleStatistics")
        if not kubeflow:  # TFX declares the type's properties; Kubeflow's types are schemaless
            statistics.properties.update(split_names=pb.STRING, span=pb.INT)
        self.statistics_type = store.put_artifact_type(statistics)
        kinds = ("system.Pipeline", "system.PipelineRun") if kubeflow else ("pipeline",
                                                                           "pipeline_run")
        pipeline_type, self.run_type = (store.put_context_type(pb.ContextType(name=kind))
                                        for kind in kinds)
        [pipeline_id] = store.put_contexts([pb.Context(type_id=pipeline_type, name=name)])
        [self.pipeline] = store.get_contexts_by_id([pipeline_id])
        self.runs = 0

    def _execute(self, task: str, run: Any, state: int, outputs: list[Any] = ()) -> list[int]:
        from ml_metadata.proto import metadata_store_pb2 as pb

        kind = "system.ContainerExecution" if self.kubeflow else f"components.{task}"
        execution = pb.Execution(
            type_id=self.store.put_execution_type(pb.ExecutionType(name=kind)),
            last_known_state=state)
        contexts = [self.pipeline, run]
        if self.kubeflow:
            execution.custom_properties["task_name"].string_value = task
        else:
            node_type = self.store.put_context_type(pb.ContextType(name="node"))
            contexts.append(pb.Context(type_id=node_type, name=f"{self.name}.{task}"))
        output = pb.Event(type=pb.Event.OUTPUT)
        _, ids, _ = self.store.put_execution(execution, [(a, output) for a in outputs],
                                             contexts, reuse_context_if_already_exist=True)
        return ids

    def _statistics(self, uri: str, task: str, run: Any, **custom: int) -> Any:
        from ml_metadata.proto import metadata_store_pb2 as pb

        artifact = pb.Artifact(type_id=self.statistics_type, uri=uri, state=pb.Artifact.LIVE)
        properties = artifact.custom_properties if self.kubeflow else artifact.properties
        properties["split_names"].string_value = json.dumps(list(SPLITS))
        for key, value in custom.items():
            artifact.custom_properties[key].int_value = value
        [artifact_id] = self._execute(task, run, pb.Execution.COMPLETE, [artifact])
        return self.store.get_artifacts_by_id([artifact_id])[0]

    def start(self, uri: str) -> tuple[Any, Any]:
        """A new run whose StatisticsGen wrote `uri`: (run context, statistics artifact)."""
        from ml_metadata.proto import metadata_store_pb2 as pb

        self.runs += 1
        [run_id] = self.store.put_contexts([pb.Context(type_id=self.run_type,
                                                       name=f"{self.name}-run-{self.runs}")])
        if self.kubeflow:
            self.store.put_parent_contexts([pb.ParentContext(child_id=run_id,
                                                             parent_id=self.pipeline.id)])
        [run] = self.store.get_contexts_by_id([run_id])
        return run, self._statistics(uri, "StatisticsGen", run)

    def lookup_copy(self, run: Any, uri: str) -> Any:
        """The run's PreviousStatistics output (a copy of other statistics)."""
        from components.common.previous_statistics import LOOKUP

        return self._statistics(uri, "PreviousStatistics", run, **{LOOKUP: 1})

    def gate(self, run: Any, state: int) -> None:
        """The run's AnomalyGate ended in `state`."""
        self._execute("AnomalyGate", run, state)


@pytest.mark.parametrize("kubeflow", [False, True], ids=["tfx", "kubeflow"])
def test_previous_statistics_are_the_newest_of_an_earlier_run_that_passed_the_gate(
        tmp_path, kubeflow):
    from ml_metadata.proto import metadata_store_pb2 as pb

    from components.common.previous_statistics import find_previous_statistics, recorded_splits

    store = _store(tmp_path / "m.sqlite")
    text = _Runs(store, "text-lm-smoke", kubeflow)

    def previous(pipeline: str = "text-lm-smoke", gate: str = "AnomalyGate") -> int | None:
        found = find_previous_statistics(store, pipeline, gate)
        return None if found is None else found.id

    first_run, first = text.start("/stats/1")
    assert previous() is None  # the first run: no baseline
    text.gate(first_run, pb.Execution.COMPLETE)
    second_run, second = text.start("/stats/2")
    assert previous() == first.id
    text.lookup_copy(second_run, "/stats/2-baseline")  # newer, but a copy: never a baseline
    text.gate(second_run, pb.Execution.CACHED)
    drifted_run, _ = text.start("/stats/3")
    assert previous() == second.id
    text.gate(drifted_run, pb.Execution.FAILED)  # stopped at the gate: never a baseline
    text.start("/stats/4")
    assert previous() == second.id

    vae = _Runs(store, "vae-smoke", kubeflow)
    vae_run, vae_statistics = vae.start("/stats/vae")
    vae.gate(vae_run, pb.Execution.COMPLETE)
    assert previous() == second.id  # another pipeline's newer run is not this one's
    assert previous("vae-smoke") == vae_statistics.id
    assert previous("never-ran") is None
    assert previous(gate="ExampleValidator") is None  # no such task passed
    assert recorded_splits(second) == list(SPLITS)


def _write_statistics(folder: Path, mean_words: float) -> Any:
    """Real TFDV statistics of `num_words` around `mean_words`, laid out as StatisticsGen
    writes them; the ExampleStatistics artifact."""
    import numpy as np
    import pandas as pd
    import tensorflow_data_validation as tfdv
    from tfx.components.statistics_gen.stats_artifact_utils import BINARY_PB_BASENAME
    from tfx.types import artifact_utils, standard_artifacts

    words = np.random.default_rng(7)
    for split in SPLITS:
        (folder / f"Split-{split}").mkdir(parents=True)
        frame = pd.DataFrame({"num_words": words.poisson(mean_words, 200)})
        (folder / f"Split-{split}" / BINARY_PB_BASENAME).write_bytes(
            tfdv.generate_statistics_from_dataframe(frame).SerializeToString())
    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = str(folder)
    statistics.split_names = artifact_utils.encode_split_names(list(SPLITS))
    return statistics


def _split_files(uri: str) -> dict[str, bytes]:
    return {split: (Path(uri) / f"Split-{split}" / "FeatureStats.pb").read_bytes()
            for split in SPLITS}


def _container_lookup(spec_path: Path, statistics: Any, baseline_uri: Path, metadata: str
                      ) -> dict[str, Any]:
    """Runs the compiled spec's PreviousStatistics container command (TFX's Kubeflow v2 entry
    point, with the spec's own arguments) on an executor input as KFP's launcher writes it;
    returns the output artifact as the executor output hands it back to KFP."""
    from absl import logging as absl_logging
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

    container = spec_dict(spec_path)["deploymentSpec"]["executors"][
        "PreviousStatistics_executor"]["container"]
    title = {"schemaTitle": "tfx.ExampleStatistics"}
    executor_input = {
        "inputs": {
            "artifacts": {"statistics": {"artifacts": [{
                "name": "statistics", "type": title, "uri": statistics.uri,
                "metadata": {"split_names": statistics.split_names}}]}},
            "parameterValues": {"pipeline_name": "text-lm-smoke", "gate": "AnomalyGate",
                                "metadata": metadata}},
        "outputs": {
            "artifacts": {"baseline": {"artifacts": [{
                "name": "baseline", "type": title, "uri": str(baseline_uri)}]}},
            "outputFile": str(baseline_uri.parent / f"{baseline_uri.name}-task" / "output.json")},
    }
    argv = [json.dumps(executor_input) if arg == "{{$}}" else arg for arg in container["args"]]
    verbosity = absl_logging.get_verbosity()  # the entry point turns INFO logging on
    try:
        kubeflow_v2_run_executor._run_executor(*kubeflow_v2_run_executor._parse_flags(argv))
    finally:
        absl_logging.set_verbosity(verbosity)
    output = json.loads(Path(executor_input["outputs"]["outputFile"]).read_text())
    [artifact] = output["artifacts"]["baseline"]["artifacts"]
    return artifact


def test_distribution_validator_and_the_gate_judge_against_the_lookup_output(specs, tmp_path,
                                                                            capsys):
    """The compiled PreviousStatistics container command, then the DistributionValidator and
    AnomalyGate executors, as a run of the spec chains them: drift against an earlier run's
    statistics stops the gate; with no earlier run the baseline is this run's own statistics
    and the gate passes, saying that drift was not checked."""
    from ml_metadata.proto import metadata_store_pb2 as pb
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    from tfx.components.distribution_validator.executor import Executor as DistributionValidator
    from tfx.types import artifact_utils, standard_artifacts

    from components.common.previous_statistics import FOUND, LOOKUP, MESSAGE
    from components.data_validation import AnomalyGate, DataAnomaliesError, drift_config

    path = tmp_path / "m.sqlite"
    runs = _Runs(_store(path), "text-lm-smoke", kubeflow=True)
    earlier = _write_statistics(tmp_path / "run-1", mean_words=20)
    earlier_run, _ = runs.start(earlier.uri)
    runs.gate(earlier_run, pb.Execution.COMPLETE)
    current = _write_statistics(tmp_path / "run-2", mean_words=3)  # reviews cut short
    runs.start(current.uri)

    schema_anomalies = standard_artifacts.ExampleAnomalies()  # ExampleValidator found none
    schema_anomalies.uri = str(tmp_path / "schema_anomalies")
    schema_anomalies.split_names = artifact_utils.encode_split_names(list(SPLITS))
    for split in SPLITS:
        (tmp_path / "schema_anomalies" / f"Split-{split}").mkdir(parents=True)
        (tmp_path / "schema_anomalies" / f"Split-{split}" / "SchemaDiff.pb").write_bytes(
            anomalies_pb2.Anomalies().SerializeToString())

    def lookup(name: str, metadata: str) -> tuple[Any, dict[str, Any]]:
        """(the baseline as DistributionValidator reads it, its metadata as KFP records it)."""
        output = _container_lookup(specs["text"], current, tmp_path / name, metadata)
        baseline = standard_artifacts.ExampleStatistics()
        baseline.uri = output["uri"]
        baseline.split_names = output["metadata"]["split_names"]
        baseline.set_float_custom_property(FOUND, output["metadata"][FOUND])  # KFP's number
        return baseline, output["metadata"]

    pairs = spec_dict(specs["text"])["root"]["dag"]["tasks"]["DistributionValidator"][
        "inputs"]["parameters"]["include_split_pairs"]["runtimeValue"]["constant"]

    def gate(baseline: Any) -> str:
        """What the gate printed; DataAnomaliesError when it stops the run."""
        drift = standard_artifacts.ExampleAnomalies()
        drift.uri = f"{baseline.uri}-drift"
        DistributionValidator().Do(
            {"statistics": [current], "baseline_statistics": [baseline]}, {"anomalies": [drift]},
            {"distribution_validator_config": drift_config({"num_words": 0.1}),
             "include_split_pairs": pairs})
        assert artifact_utils.decode_split_names(drift.split_names) == ["train_train"]
        capsys.readouterr()
        AnomalyGate.EXECUTOR_SPEC.executor_class().Do(
            {"anomalies": [schema_anomalies], "drift": [drift], "baseline": [baseline]}, {}, {})
        return capsys.readouterr().out

    found, recorded = lookup("baseline", f"sqlite://{path}")
    assert recorded[FOUND] == 1 and recorded[LOOKUP] == 1  # the marker reaches KFP's store
    assert artifact_utils.decode_split_names(found.split_names) == list(SPLITS)
    assert _split_files(found.uri) == _split_files(earlier.uri)
    with pytest.raises(DataAnomaliesError, match="train_train: feature 'num_words'.*Jensen"):
        gate(found)

    empty = tmp_path / "empty.sqlite"
    _store(empty)
    for name, metadata, said in (("first-run", f"sqlite://{empty}", "no earlier run"),
                                 ("no-store", "", "no metadata store given")):
        own, recorded = lookup(name, metadata)
        assert recorded[FOUND] == 0 and recorded[MESSAGE].startswith(said)
        assert _split_files(own.uri) == _split_files(current.uri)
        assert "no baseline (first run): drift not checked" in gate(own)  # nothing drifted
    with pytest.raises(ValueError, match="allowed: grpc://HOST:PORT"):
        lookup("bad", "mysql://db")


def test_compiled_specs_read_the_curated_schema_where_the_image_holds_it(specs):
    from components.schemas import IMAGE_SCHEMA_DIR

    dockerfile = (Path(__file__).parent.parent / "Dockerfile").read_text()
    workdir = next(line.split()[1] for line in dockerfile.splitlines()
                   if line.startswith("WORKDIR"))
    assert "COPY components components" in dockerfile
    assert IMAGE_SCHEMA_DIR == f"{workdir}/components/schemas"
    assert f"{IMAGE_SCHEMA_DIR}/digits.pbtxt" in specs["vae"].read_text()
