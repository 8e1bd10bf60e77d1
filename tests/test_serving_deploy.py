"""deploy/: the compose file and Kubernetes manifests agree with each other and with the
config files, which the official TF Serving protos parse."""

from __future__ import annotations

from pathlib import Path

import yaml
from google.protobuf import text_format

from serving.config import ModelServerConfig, read_model_config_file, read_monitoring_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CONTRACT = {"text_lm", "vae", "gan", "deepdream", "style_transfer"}
IMAGE = "tensorflow/serving:2.16.1"


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def flags(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in args)


def test_models_config_lists_the_contract_models_under_models():
    config = read_model_config_file(DEPLOY / "models.config")
    models = {m.name: m.base_path for m in config.model_config_list.config}
    assert set(models) == CONTRACT
    assert all(path == f"/models/{name}" for name, path in models.items())
    prometheus = read_monitoring_config(DEPLOY / "monitoring.config").prometheus_config
    assert prometheus.enable and prometheus.path == "/monitoring/prometheus/metrics"


def test_compose_runs_the_real_server_on_the_model_root():
    (service,) = load("docker-compose.yml")["services"].values()
    assert service["image"] == IMAGE
    assert {"127.0.0.1:8500:8500", "127.0.0.1:8501:8501"} <= set(service["ports"])
    # "SOURCE:TARGET:ro" (SOURCE may be "${VAR:-default}", itself holding a colon).
    mounts = {v.rsplit(":", 2)[1]: v.rsplit(":", 2)[0] for v in service["volumes"]}
    assert mounts["/models"] == "${GENPIPE_MODEL_ROOT:-../runs/serving}"
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
