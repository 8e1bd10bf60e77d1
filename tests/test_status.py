"""`genpipe status` anywhere: URL roots through tf.io.gfile, a remote ML Metadata store's client
config, label moves read from any store, and clear errors for a root that is not there."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid

import pytest
from fixtures_dream_style import run_cli

from pipeline import promotion
from pipeline import status as st

# This venv has no `metadata_store_server` binary, so no test runs a real ML Metadata gRPC server:
# the client config is checked as built, and an unreachable store must fail with a clear message.


def _copy_tree(source: str, target: str) -> None:
    import tensorflow as tf

    for directory, _, files in tf.io.gfile.walk(source):
        into = os.path.join(target, os.path.relpath(directory, source))
        tf.io.gfile.makedirs(into)
        for name in files:
            tf.io.gfile.copy(os.path.join(directory, name), os.path.join(into, name))


@pytest.fixture(scope="module")
def ram_root(text_smoke_run) -> str:
    """The text smoke root's store and serving folder copied to TensorFlow's ram:// filesystem."""
    import tensorflow as tf

    local = str(text_smoke_run.root)
    root = f"ram://status-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(root)
    tf.io.gfile.copy(os.path.join(local, "metadata.sqlite"), os.path.join(root, "metadata.sqlite"))
    _copy_tree(os.path.join(local, "serving"), os.path.join(root, "serving"))
    return root


def test_a_url_root_reads_like_the_local_folder(ram_root, text_smoke_run):
    local = st.model_status(str(text_smoke_run.root))
    remote = st.model_status(ram_root)
    assert [v.version for v in remote] == [v.version for v in local] and remote
    text = next(v for v in remote if v.model == "text_lm")
    assert text.on_disk and text.metrics["perplexity"] > 0 and text.pipeline == "text-lm-smoke"
    assert text.tensorboard.endswith(tuple("0123456789")) and "model_run" in text.tensorboard
    assert os.path.isdir(text.tensorboard)  # the Trainer's TensorBoard logs

    code, out = run_cli("status", "--root", ram_root, "--json")
    assert code == 0, out
    rows = json.loads(out[out.index("["):])
    assert {row["model"] for row in rows} == {"text_lm"}
    assert rows[0]["tensorboard"] == text.tensorboard


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_missing_root_is_a_clear_error(command, tmp_path):
    for root in (str(tmp_path / "nowhere"), f"ram://missing-{uuid.uuid4().hex}"):
        code, out = run_cli(command, "--root", root)
        assert code == 2
        assert f"--root {root}: no such folder" in out


def test_remote_metadata_client_config(tmp_path):
    cert = tmp_path / "ca.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    config = st.MetadataSource("mlmd.example", 8080, str(cert), timeout=3).client_config()
    assert (config.host, config.port, config.client_timeout_sec) == ("mlmd.example", 8080, 3)
    assert config.ssl_config.custom_ca == cert.read_text()
    plain = st.MetadataSource("mlmd.example", 8080).client_config()
    assert not plain.HasField("ssl_config")
    with pytest.raises(ValueError, match=r"--metadata-port 0: expected a port in \[1, 65535\]"):
        st.MetadataSource("mlmd.example", 0).client_config()
    with pytest.raises(ValueError, match="--root-cert .*missing.pem: cannot read it"):
        st.MetadataSource("h", 1, str(tmp_path / "missing.pem")).client_config()


def test_flags_and_an_unreachable_store_fail_clearly(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out = run_cli("status", "--root", str(tmp_path), "--metadata-host", "127.0.0.1")
    assert code == 2 and "--metadata-host and --metadata-port go together" in out
    code, out = run_cli("status", "--root", str(tmp_path), "--metadata-host", "127.0.0.1",
                        "--metadata-port", str(port), "--timeout", "3")
    assert code == 2 and f"ML Metadata at 127.0.0.1:{port}: cannot read it" in out
    code, out = run_cli("status", "--root", str(tmp_path), "--server", "127.0.0.1:1",
                        "--token-file", str(tmp_path / "no-token"))
    assert code == 2 and "--token-file" in out and "no-token" in out


def test_label_moves_read_from_any_store_match_promotion(tmp_path):
    promotion.record_move(tmp_path, model="vae", label="canary", action="canary",
                          from_version=None, to_version=3, server="h:1", moved=True,
                          message="moved canary to 3")
    promotion.record_move(tmp_path, model="vae", label="stable", action="promote",
                          from_version=2, to_version=3, server="h:1", moved=False,
                          message="refused: not AVAILABLE")
    expected = promotion.label_moves(tmp_path)
    assert [dataclasses.asdict(m) for m in st.label_moves(str(tmp_path))] == [
        dataclasses.asdict(m) for m in expected
    ]
    assert [m.moved for m in expected] == [True, False]
