"""deploy/: the compose file and Kubernetes manifests agree with each other, with the config
files (which the official TF Serving protos parse) and with the demo's model root."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from google.protobuf import text_format

from serving import cli as serving_cli
from serving.config import (
    ModelServerConfig,
    config_for_root,
    read_model_config_file,
    read_monitoring_config,
)

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
# Every model `make demo` pushes (scripts/demo.sh and the scripts it runs).
DEMO_MODELS = ["deepdream", "fast_style_starry_night", "gan", "style_transfer", "text_lm", "vae"]
IMAGE = "tensorflow/serving:2.16.1"


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def flags(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in args)


def _model_list(config: ModelServerConfig) -> list[tuple[str, str]]:
    return [(m.name, m.base_path) for m in config.model_config_list.config]


def test_models_config_lists_the_demo_models_under_models():
    config = read_model_config_file(DEPLOY / "models.config")
    assert _model_list(config) == [(name, f"/models/{name}") for name in DEMO_MODELS]
    prometheus = read_monitoring_config(DEPLOY / "monitoring.config").prometheus_config
    assert prometheus.enable and prometheus.path == "/monitoring/prometheus/metrics"


def test_compose_runs_the_real_server_on_the_model_root():
    (service,) = load("docker-compose.yml")["services"].values()
    assert service["image"] == IMAGE
    assert {"127.0.0.1:8500:8500", "127.0.0.1:8501:8501"} <= set(service["ports"])
    # "SOURCE:TARGET:ro" (SOURCE may be "${VAR:-default}", itself holding a colon).
    mounts = {v.rsplit(":", 2)[1]: v.rsplit(":", 2)[0] for v in service["volumes"]}
    source = mounts["/models"]
    default = re.fullmatch(r"\$\{GENPIPE_MODEL_ROOT:-(.+)\}", source).group(1)
    # A bind mount: compose reads a source without ./, ../ or / as a named volume.
    assert default.startswith(("./", "../", "/"))
    assert (DEPLOY / default).resolve() == (REPO / demo_serving_root()).resolve()
    args = flags(service["command"])
    for flag in ("model_config_file", "monitoring_config_file"):
        mounted = Path(args[flag])
        assert (DEPLOY / mounts[str(mounted)]).resolve().is_file()


def test_kubernetes_manifests_fit_together():
    deployment, service = load("k8s/deployment.yaml"), load("k8s/service.yaml")
    configmap, claim = load("k8s/configmap.yaml"), load("k8s/pvc.yaml")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == IMAGE
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert (
        volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"]
        == claim["metadata"]["name"]
    )
    assert volumes[mounts["/config"]]["configMap"]["name"] == configmap["metadata"]["name"]
    args = flags(container["args"])
    for flag in ("model_config_file", "monitoring_config_file"):
        assert Path(args[flag]).name in configmap["data"]
    # The ConfigMap carries the same model list as deploy/models.config.
    in_cluster = text_format.Parse(configmap["data"]["models.config"], ModelServerConfig())
    on_disk = read_model_config_file(DEPLOY / "models.config")
    assert in_cluster == on_disk


def demo_serving_root() -> str:
    """The model root `make demo` serves: "$ROOT/serving" with scripts/demo.sh's default ROOT."""
    script = (REPO / "scripts" / "demo.sh").read_text()
    root = re.search(r'^ROOT="\$\{GENPIPE_DEMO_ROOT:-([^}]+)\}"', script, re.MULTILINE).group(1)
    assert '--models_root "$ROOT/serving"' in script
    return f"{root}/serving"


def test_docs_use_a_bind_mount_path_for_the_model_root():
    for text in ((REPO / "docs" / "serving.md").read_text(), load_text("docker-compose.yml")):
        for value in re.findall(r"GENPIPE_MODEL_ROOT=(\S+)", text):
            assert value.strip("\"'").startswith(("$PWD/", "/", "./", "../")), value


def load_text(name: str) -> str:
    return (DEPLOY / name).read_text()


def test_serving_config_regenerates_deploy_models_config(tmp_path, monkeypatch, capsys):
    """The command in the file's header, run on the demo's model root, rewrites the file as it
    is (settings such as text_lm's version policy kept); a new model is added, a gone one
    dropped."""
    root = tmp_path / demo_serving_root()
    for name in DEMO_MODELS:
        (root / name / "1").mkdir(parents=True)
    (tmp_path / "deploy").mkdir()
    written = tmp_path / "deploy" / "models.config"
    written.write_text((DEPLOY / "models.config").read_text())
    command = re.search(r"`genpipe serving-config ([^`]+)`", written.read_text()).group(1)
    monkeypatch.chdir(tmp_path)
    assert serving_cli.main(["serving-config", *command.split()]) == 0
    assert written.read_text() == (DEPLOY / "models.config").read_text()

    (root / "gan" / "1").rmdir()
    (root / "new_model" / "3").mkdir(parents=True)
    assert serving_cli.main(["serving-config", *command.split()]) == 0
    config = read_model_config_file(written)
    names = [m.name for m in config.model_config_list.config]
    assert "gan" not in names and "new_model" in names
    (text_lm,) = [m for m in config.model_config_list.config if m.name == "text_lm"]
    assert text_lm.model_version_policy.latest.num_versions == 2
    assert config_for_root(root, "/models").model_config_list.config[0].base_path == (
        "/models/deepdream"
    )

    written.write_text("model_config_list { config { name: 'a/b' base_path: '/x' } }")
    assert serving_cli.main(["serving-config", *command.split()]) == 2
    assert "fix or remove it" in capsys.readouterr().err
