"""Promotion and rollback (`genpipe serving-target`, `canary`, `promote`, `rollback`) against a
real in-process `ModelServer` serving the kept models.config, with the VAE smoke pipeline's
pushed version (its real warmup requests) pushed again as later versions."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli, promotion
from pipeline.promotion import LabelMove, previous_stable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def push_copy(version_dir: Path, base: Path, version: int, corrupt: bool = False) -> Path:
    """Push a copy of a pushed version as ``version`` the way the pusher does (staged, then
    renamed); ``corrupt`` replaces its saved_model.pb with bytes no loader reads."""
    staging = base / f".{version}.partial"
    shutil.copytree(version_dir, staging)
    if corrupt:
        (staging / "saved_model.pb").write_bytes(b"not a SavedModel")
    return staging.rename(base / str(version))


@pytest.fixture
def root(vae_smoke_run, tmp_path) -> Path:
    """A root holding the smoke run's ML Metadata and its pushed VAE version."""
    pushed = Path(vae_smoke_run.first.output("Pusher", "pushed_model").properties[
        "pushed_destination"])
    source = sqlite3.connect(vae_smoke_run.root / "metadata.sqlite")
    with sqlite3.connect(tmp_path / "metadata.sqlite") as copy:
        source.backup(copy)  # consistent even while another test writes the store
    source.close()
    base = tmp_path / "serving" / "vae"
    base.mkdir(parents=True)
    push_copy(pushed, base, int(pushed.name))
    return tmp_path


@pytest.fixture
def bare_root(tmp_path) -> Path:
    """A root with one VAE version on disk that no server could load (for refused moves)."""
    version = tmp_path / "serving" / "vae" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    return tmp_path


@contextmanager
def model_server(config: Path, port: int) -> Iterator[str]:
    """`genpipe serve --model_config_file CONFIG --port PORT` in this process; yields its
    gRPC address."""
    from serving.config import read_model_config_file
    from serving.server import ModelServer, ServerOptions, build_manager

    manager = build_manager(config=read_model_config_file(config), poll_wait_seconds=0)
    server = ModelServer(manager, ServerOptions(port=port, rest_api_port=0))
    server.start()
    try:
        yield f"127.0.0.1:{server.grpc_port}"
    finally:
        server.stop(grace=1)


def genpipe(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def labelled(address: str, label: str) -> int:
    """The version answering requests for ``label`` on the server."""
    from client import ModelServerClient

    with ModelServerClient(address, timeout=30) as client:
        seeds = {"seed": np.array([1], np.int64)}
        return client.predict("vae", seeds, signature="sample", label=label).version


def status(root: Path, address: str) -> dict[int, tuple[str, list[str]]]:
    """{version: (server state, labels)} of `genpipe status` for the VAE."""
    from pipeline.status import model_status

    return {s.version: (s.server_state, s.labels) for s in model_status(str(root), address)
            if s.model == "vae"}


def recorded(root: Path) -> list[tuple[str, str, int | None, int, str, list[str]]]:
    """(action, label, from, to, state, input artifact types) of every `genpipe.LabelMove` in
    the store, queried with ML Metadata directly."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(root / "metadata.sqlite")
    store = metadata_store.MetadataStore(config)
    types = {t.id: t.name for t in store.get_artifact_types()}
    rows = []
    for execution in sorted(store.get_executions_by_type("genpipe.LabelMove"), key=lambda e: e.id):
        props = execution.properties
        assert props["user"].string_value and props["model"].string_value == "vae"
        events = store.get_events_by_execution_ids([execution.id])
        inputs = store.get_artifacts_by_id([e.artifact_id for e in events])
        rows.append((
            props["action"].string_value,
            props["label"].string_value,
            props["from_version"].int_value if "from_version" in props else None,
            props["to_version"].int_value,
            pb.Execution.State.Name(execution.last_known_state),
            [types[artifact.type_id] for artifact in inputs],
        ))
    return rows


@pytest.mark.slow
def test_push_canary_promote_rollback_and_a_version_that_fails_to_load(
    root, vae_smoke_run, capsys
):
    base = root / "serving" / "vae"
    [v1] = [int(p.name) for p in base.iterdir()]
    v2, v3 = v1 + 1, v1 + 2
    port = free_port()
    code, out = genpipe(capsys, "serving-target", "set", "--root", str(root),
                        "--server", f"127.0.0.1:{port}")
    assert code == 0, out
    kept = root / "serving" / "models.config"
    target = json.loads((root / "serving.json").read_text())
    assert target["models_config"] == str(kept) and target["server"] == f"127.0.0.1:{port}"

    with model_server(kept, port) as address:
        # `genpipe run`'s last step, on the run that pushed v1
        outcome = promotion.canary_after_run(root, vae_smoke_run.first)
        out = capsys.readouterr().out
        assert outcome.ok and (outcome.from_version, outcome.to_version) == (None, v1), out
        assert "warmup request(s) answered within the serving contract" in out
        assert f"canary: none -> {v1}" in out
        assert labelled(address, "canary") == v1
        assert status(root, address)[v1] == ("AVAILABLE", ["canary"])

        code, out = genpipe(capsys, "promote", "vae", "--root", str(root))
        assert code == 0 and f"stable: none -> {v1}" in out, out
        assert status(root, address)[v1] == ("AVAILABLE", ["canary", "stable"])

        push_copy(base / str(v1), base, v2)
        assert genpipe(capsys, "canary", "vae", "--root", str(root))[0] == 0
        assert labelled(address, "canary") == v2 and labelled(address, "stable") == v1
        assert status(root, address)[v2] == ("AVAILABLE", ["canary"])

        code, out = genpipe(capsys, "promote", "vae", "--root", str(root))
        assert code == 0 and f"stable: {v1} -> {v2}" in out, out
        states = status(root, address)
        assert states[v2] == ("AVAILABLE", ["canary", "stable"])
        assert states[v1][1] == []  # no label left on it: it unloads

        code, out = genpipe(capsys, "rollback", "vae", "--root", str(root))
        assert code == 0 and f"stable: {v2} -> {v1}" in out, out
        assert labelled(address, "stable") == v1 and labelled(address, "canary") == v2
        states = status(root, address)
        assert states[v1] == ("AVAILABLE", ["stable"]) and states[v2][1] == ["canary"]

        before = kept.read_bytes()
        push_copy(base / str(v1), base, v3, corrupt=True)
        code, out = genpipe(capsys, "canary", "vae", "--root", str(root), "--wait", "30")
        assert code == 1 and f"vae version {v3} failed to load" in out, out
        assert f"canary not moved (stays {v2})" in out
        assert kept.read_bytes() == before
        assert labelled(address, "stable") == v1 and labelled(address, "canary") == v2
        states = status(root, address)
        assert states[v3][1] == [] and states[v1][1] == ["stable"]

        code, out = genpipe(capsys, "status", "--root", str(root), "--server", address)
        assert code == 0, out
        moves = " ".join(out[out.index("label moves"):].split())
        for expected in (
            f"vae canary canary none -> {v1} moved", f"vae promote stable none -> {v1} moved",
            f"vae canary canary {v1} -> {v2} moved", f"vae promote stable {v1} -> {v2} moved",
            f"vae rollback stable {v2} -> {v1} moved",
            f"vae canary canary {v2} -> {v3} refused: FAILED_PRECONDITION: vae version {v3}",
        ):
            assert expected in moves, moves

    from serving.config import read_model_config_file

    [entry] = read_model_config_file(kept).model_config_list.config
    assert list(entry.model_version_policy.specific.versions) == [v1, v2]
    with model_server(kept, free_port()) as address:  # a restart keeps the labels
        assert labelled(address, "stable") == v1 and labelled(address, "canary") == v2

    pushed = ["PushedModel"]  # v1 came from the pipeline; v2 and v3 are copies of it
    assert recorded(root) == [
        ("canary", "canary", None, v1, "COMPLETE", pushed),
        ("promote", "stable", None, v1, "COMPLETE", pushed),
        ("canary", "canary", v1, v2, "COMPLETE", []),
        ("promote", "stable", v1, v2, "COMPLETE", []),
        ("rollback", "stable", v2, v1, "COMPLETE", pushed),
        ("canary", "canary", v2, v3, "FAILED", []),
    ]


def test_moves_without_a_target_or_with_bad_input_are_refused(bare_root, capsys):
    root = bare_root
    code, out = genpipe(capsys, "promote", "vae", "--root", str(root))
    assert code == 2 and "has no serving target" in out and "serving-target set" in out
    code, out = genpipe(capsys, "serving-target", "set", "--root", str(root), "--server", "x")
    assert code == 2 and "--server 'x': expected HOST:PORT" in out
    assert not (root / "serving.json").exists()
    assert genpipe(capsys, "serving-target", "set", "--root", str(root), "--server",
                   f"127.0.0.1:{free_port()}")[0] == 0
    code, out = genpipe(capsys, "promote", "vae", "--root", str(root))
    assert code == 2 and "vae has no canary to promote" in out
    code, out = genpipe(capsys, "canary", "vae", "--version", "7", "--root", str(root))
    assert code == 2 and "--version 7: not a complete version of vae; on disk: " in out
    code, out = genpipe(capsys, "rollback", "text_lm", "--root", str(root))
    assert code == 2 and "MODEL 'text_lm' has no pushed versions" in out and "allowed: vae" in out
    code, out = genpipe(capsys, "rollback", "vae", "--root", str(root))
    assert code == 2 and "no earlier stable version" in out and "--to V" in out
    (root / "serving.json").write_text(json.dumps({"server": "h:1", "models_config": "m",
                                                   "port": 1}))
    code, out = genpipe(capsys, "status", "--root", str(root))
    assert code == 2 and "unknown field(s) ['port']" in out and "allowed: ['server'" in out


def test_a_server_that_is_down_moves_nothing(bare_root, capsys):
    root = bare_root
    promotion.set_target(root, f"127.0.0.1:{free_port()}")
    kept = root / "serving" / "models.config"
    before = kept.read_bytes()
    code, out = genpipe(capsys, "canary", "vae", "--root", str(root), "--wait", "1")
    assert code == 1 and "no model server at" in out and "canary not moved" in out
    assert kept.read_bytes() == before
    assert [m.moved for m in promotion.label_moves(root)] == [False]


def move(action: str, to: int, before: int | None = None) -> LabelMove:
    return LabelMove(0, "m", "stable", action, before, to, "u", "s", "t", True, "")


def test_rollback_goes_to_the_last_good_stable_version():
    history = [move("promote", 1), move("promote", 2, 1), move("promote", 3, 2)]
    assert previous_stable(history, 3) == 2
    history.append(move("rollback", 2, 3))
    assert previous_stable(history, 2) == 1  # 3 was rolled back from: not good
    history.append(move("rollback", 1, 2))
    assert previous_stable(history, 1) is None
    history.append(move("promote", 3, 1))  # promoted again after a fix: good again
    assert previous_stable(history, 3) == 1
    assert previous_stable([], None) is None


def test_labelled_entry_serves_the_labelled_versions():
    from serving.config import ModelConfig, labelled_entry

    model = ModelConfig(name="m", base_path="/m")
    model.model_version_policy.latest.num_versions = 2
    model.version_labels["old"] = 1
    entry = labelled_entry(model, {"stable": 3, "canary": 5}, also_serve=[6])
    assert list(entry.model_version_policy.specific.versions) == [3, 5, 6]
    assert dict(entry.version_labels) == {"stable": 3, "canary": 5}
    assert entry.model_version_policy.WhichOneof("policy_choice") == "specific"
    assert dict(model.version_labels) == {"old": 1}  # a copy
    with pytest.raises(ValueError, match="model m: a specific version policy needs a version"):
        labelled_entry(model, {})
