"""An atomic, idempotent Pusher executor for filesystem destinations (every model uses it).

TFX's Pusher copies the SavedModel into `<base>/<unix time>/` file by file (saved_model.pb last),
so the version folder is visible while half written, and a re-run of the same model pushes a
duplicate version. `AtomicPusher` (TFX's Pusher with the executor below):
- copies into a hidden staging folder `<base>/.<version>.partial` (saved_model.pb last) and
  renames it to `<base>/<version>` in one step, so a server polling `<base>` sees either no
  version or a complete one (on local filesystems; other schemes get TFX's copy with
  saved_model.pb last, see `publish_version`); every file call goes through `fileio`;
- on local filesystems, pushes one at a time per base folder (an OS lock on `<base>/.push.lock`,
  released by the kernel when a pusher dies), and under that lock removes the staging folders
  a killed push left behind (`removed_partials` on the output artifact);
- does not push a model whose files equal the latest pushed version's; the output artifact then
  records that version (`pushed_version`) and `reused_version=1`;
- with an `infra_blessing` from `ServingValidator`, pushes only when it is blessed too, and puts
  its requests into the version as `assets.extra/tf_serving_warmup_requests` (before
  saved_model.pb appears), so TF Serving replays exactly the requests that were validated.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

from absl import logging
from tfx import types
from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from components.common.evaluation import BLESSING_MESSAGE
from components.common.serving_validation import WARMUP_FILE, WARMUP_PATH

SAVED_MODEL_FILE = "saved_model.pb"
STAGING = re.compile(r"\.(\d+)\.partial")  # `.<version>.partial`: a version being staged
LOCK_FILE = ".push.lock"  # in the base folder; model servers skip names starting with a dot
NOT_PUSHED_REASON = "not_pushed_reason"  # on the PushedModel of a model that was not pushed


def is_local(path: str) -> bool:
    """Whether `path` is on the local filesystem (where a folder rename is atomic)."""
    return "://" not in path or path.startswith("file://")


def version_files(model_dir: str, warmup_file: str | None = None) -> dict[str, str]:
    """{path in the version: source file}: the SavedModel's files, and the warmup file if any."""
    files = _relative_files(model_dir)
    if warmup_file is not None:
        files[WARMUP_PATH] = warmup_file
    return files


def copy_files(files: Mapping[str, str], destination: str) -> None:
    """Copies `version_files` into `destination`, saved_model.pb last (servers wait for it)."""
    for name in sorted(files, key=lambda name: name == SAVED_MODEL_FILE):
        io_utils.copy_file(files[name], os.path.join(destination, name), overwrite=True)


def publish_version(files: Mapping[str, str], version_dir: str) -> None:
    """Makes `version_dir` appear complete: staged beside it, then renamed (local paths).

    Other schemes copy into `version_dir` directly, saved_model.pb last: object stores (gs://,
    s3://) have no folder rename (gfile renames a folder object by object, copy then delete, in
    listing order), and ram:// renames only the folder's own entry, not what it holds.
    """
    if not is_local(version_dir):
        copy_files(files, version_dir)
        return
    base, version = os.path.split(version_dir.rstrip("/"))
    staging = staging_dir(base, version)
    if fileio.exists(staging):
        fileio.rmtree(staging)
    copy_files(files, staging)
    fileio.rename(staging, version_dir)  # rename(2): atomic on one local filesystem


def staging_dir(base_dir: str, version: str) -> str:
    """Where `publish_version` stages `version` before renaming it into place."""
    return os.path.join(base_dir, f".{version}.partial")


@contextlib.contextmanager
def push_lock(base_dir: str) -> Iterator[None]:
    """One push at a time into the local folder `base_dir` (created if missing): an exclusive
    OS lock (flock) on `<base_dir>/.push.lock`, which the kernel releases if the holder dies."""
    import portalocker

    folder = base_dir.removeprefix("file://")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_FILE), "a") as handle:
        portalocker.lock(handle, portalocker.LockFlags.EXCLUSIVE)
        try:
            yield
        finally:
            portalocker.unlock(handle)


def remove_leftover_stagings(base_dir: str) -> list[str]:
    """Deletes the `.<version>.partial` folders under `base_dir` and returns their names.

    Call it holding `push_lock`: every staging folder is then a leftover of a push that died
    before its rename (a live pusher holds the lock while its staging folder exists)."""
    if not fileio.isdir(base_dir):
        return []
    removed = []
    for name in sorted(entry.rstrip("/") for entry in fileio.listdir(base_dir)):
        if STAGING.fullmatch(name):
            fileio.rmtree(os.path.join(base_dir, name))
            removed.append(name)
    return removed


def latest_version(base_dir: str) -> str | None:
    """The highest numeric version folder name under `base_dir`, if any."""
    if not fileio.isdir(base_dir):
        return None
    versions = [name.rstrip("/") for name in fileio.listdir(base_dir)]
    versions = [name for name in versions if name.isdigit()]
    return max(versions, key=int) if versions else None


def _relative_files(root: str) -> dict[str, str]:
    files = {}
    for directory, _, names in fileio.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            files[os.path.relpath(path, root)] = path
    return files


def same_files(files: Mapping[str, str], directory: str) -> bool:
    """Whether `directory` holds exactly `files` (`version_files`), with the same bytes."""
    found = _relative_files(directory)
    if found.keys() != files.keys():
        return False
    for name, path in files.items():
        with fileio.open(path, "rb") as a, fileio.open(found[name], "rb") as b:
            if a.read() != b.read():
                return False
    return True


def unblessed(input_dict: Mapping[str, list[types.Artifact]]) -> dict[str, str]:
    """{blessing input (`model_blessing`, `infra_blessing`) given and not blessed: its
    `blessing_message`, which says why (empty when the blessing has none)}."""
    specs = standard_component_specs
    given = {key: artifact_utils.get_single_instance(input_dict[key])
             for key in (specs.MODEL_BLESSING_KEY, specs.INFRA_BLESSING_KEY) if input_dict.get(key)}
    return {key: blessing.get_string_custom_property(BLESSING_MESSAGE)
            for key, blessing in given.items() if blessing.get_int_custom_property("blessed") != 1}


def not_pushed_reason(input_dict: Mapping[str, list[types.Artifact]]) -> str:
    """Why a model is not pushed: each unblessed input with its blessing's message."""
    return "; ".join(f"{key} not blessed" + (f" ({message})" if message else "")
                     for key, message in unblessed(input_dict).items())


def warmup_file(input_dict: Mapping[str, list[types.Artifact]]) -> str | None:
    """The validated requests of the `infra_blessing` input (`ServingValidator`), if any."""
    blessings = input_dict.get(standard_component_specs.INFRA_BLESSING_KEY)
    if not blessings:
        return None
    path = os.path.join(artifact_utils.get_single_instance(blessings).uri, WARMUP_FILE)
    return path if fileio.exists(path) else None


class AtomicPushExecutor(pusher_executor.Executor):
    """Pusher executor with an atomic version folder and no duplicate pushes (filesystem only)."""

    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(pushed)
            reason = not_pushed_reason(input_dict)
            pushed.set_string_custom_property(NOT_PUSHED_REASON, reason)
            logging.info("Model not pushed: %s", reason)
            print(f"  not pushed: {reason}", flush=True)
            return
        model_dir = self.GetModelPath(input_dict)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        if destination.WhichOneof("destination") != "filesystem":
            raise ValueError("push_destination must be a filesystem destination "
                             "(PushDestination.Filesystem with base_directory)")
        base_dir = destination.filesystem.base_directory

        files = version_files(model_dir, warmup_file(input_dict))
        local = is_local(base_dir)
        with push_lock(base_dir) if local else contextlib.nullcontext():
            removed = remove_leftover_stagings(base_dir) if local else []
            if removed:
                logging.warning("Removed staging folders of interrupted pushes in %s: %s",
                                base_dir, ", ".join(removed))
                print(f"  removed {len(removed)} leftover staging folder(s) of interrupted "
                      f"pushes: {', '.join(removed)}", flush=True)
            version, reused = self._publish(files, base_dir)
        print(f"  {'already served as' if reused else 'pushed'} "
              f"{os.path.join(base_dir, version)}", flush=True)

        copy_files(files, pushed.uri)
        self._MarkPushed(pushed, pushed_destination=os.path.join(base_dir, version),
                         pushed_version=version)
        pushed.set_int_custom_property("reused_version", int(reused))
        pushed.set_int_custom_property("removed_partials", len(removed))

    def _publish(self, files: Mapping[str, str], base_dir: str) -> tuple[str, bool]:
        """(version, reused): the latest version when it holds `files`, else a new one."""
        latest = latest_version(base_dir)
        if latest is not None and same_files(files, os.path.join(base_dir, latest)):
            logging.info("Model equals the pushed version %s; not pushed again.", latest)
            return latest, True
        version = self._new_version(base_dir, latest)
        publish_version(files, os.path.join(base_dir, version))
        logging.info("Model pushed to %s.", os.path.join(base_dir, version))
        return version, False

    @staticmethod
    def _new_version(base_dir: str, latest: str | None) -> str:
        """The Unix time in seconds, made larger than the latest version if the clock is not."""
        version = int(time.time())
        if latest is not None:
            version = max(version, int(latest) + 1)
        return str(version)


class AtomicPusher(pusher_component.Pusher):
    """TFX's Pusher (same inputs, outputs and `push_destination`) with `AtomicPushExecutor`."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(AtomicPushExecutor)
