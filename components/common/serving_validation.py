"""`ServingValidator`: bless a candidate only when TF Serving's loading path answers every
signature of its serving contract; its requests become the version's TF Serving warmup file.

TFX's InfraValidator only sends serialized tf.Examples; genpipe's signatures take prompts, seeds,
latent points and images. For every signature key of the contract (aliases included, optional
ones when the export's sidecar lists them) one `PredictRequest` with real inputs is built: the
contract's defaults, cheaper values where a default would be slow, a real photo and painting,
latent points and images of the sizes in the sidecar. They are written as a TFRecord of
`PredictionLog`s, TF Serving's warmup format, and replayed by `serving_replay` in a fresh
process that loads the SavedModel into a Session as tensorflow_model_server does. Each response
must then hold every contract output with its dtype, one row per request row, finite floats,
non-empty texts and decodable PNGs (of the input's size when an image goes in).

The result is an `InfraBlessing`, TFX's artifact for "the model server can run it", which the
Pusher reads as `infra_blessing` (and copies the warmup file from into the pushed version). A
`ModelBlessing` would not do: `LatestBlessedModelStrategy` would take it for the evaluator's
blessing and compare the next model with its (absent) metric.
"""

# No `from __future__ import annotations`: the @component decorator reads real annotations.
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.utils import path_utils

from components.common.evaluation import (
    BLESSED,
    BLESSING_MESSAGE,
    CURRENT_MODEL_ID,
    Check,
    decide,
    set_properties,
)
from contracts import Contract, Signature, Tensor, contract_for, read_sidecar

WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = os.path.join("assets.extra", WARMUP_FILE)  # where TF Serving looks in a version
RESPONSES_FILE = "responses.tfrecord"
REPORT_FILE = "report.json"
SAMPLES_DIR = "samples"
REPLAY_MODULE = "components.common.serving_replay"

BATCH = 2  # rows per request: enough to catch batch bugs, cheap to replay on every model load
# Values replacing the contract's defaults, which are set for quality, not for a warmup that TF
# Serving replays on every load (a default dream is 3 octaves of 30 steps).
VALUES: dict[str, Any] = {
    "seed": [0, 1],
    "max_tokens": 5,
    "iterations": 2,
    "octaves": 1,
    "height": 48,
    "n": 3,
    "steps": 3,
    # A `generate_step` probe continues a 3-word prompt of word id 2 (the likeliest word, after
    # padding and [UNK]) with an all-zero key/value cache: any state of the right shapes runs.
    "position": 3,
    "prompt_length": 3,
    "token": 2,
}
TEXTS = {"prompt": "this movie was", "text": "this movie was good"}
PICTURES = {"image": "photo", "content": "photo", "style": "painting"}  # encoded image inputs
PHOTO, PAINTING = "chelsea", "starry_night"
PICTURE_HEIGHT = 101  # odd, so a network that rounds sizes is caught
ERROR_LINES, ERROR_CHARS = 2, 300


@dataclasses.dataclass(frozen=True)
class Probe:
    """One request to one signature key, and the (height, width) its PNG outputs must have
    when an image goes in (None: no such check)."""

    key: str
    signature: Signature
    inputs: Mapping[str, np.ndarray]
    image_size: tuple[int, int] | None = None


# -- requests ------------------------------------------------------------------------------------


def _resized(image: np.ndarray, height: int, width: int | None = None, mode: str = "RGB"
             ) -> np.ndarray:
    """`image` resized to `height` rows and `width` columns (default: the aspect kept)."""
    from PIL import Image

    width = width or round(image.shape[1] * height / image.shape[0])
    picture = Image.fromarray(image).convert(mode).resize((width, height), Image.LANCZOS)
    return np.asarray(picture)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _picture(kind: str) -> np.ndarray:
    """The validation photo or painting, PICTURE_HEIGHT rows high, aspect kept."""
    from sources import photos

    image = photos.photo(PHOTO) if kind == "photo" else photos.painting(PAINTING)
    return _resized(image, PICTURE_HEIGHT)


def _unit_images(shape: list[int]) -> np.ndarray:
    """BATCH copies of the photo as float32 [H, W, C] in [0, 1] (C = 1 or 3)."""
    height, width, channels = shape
    image = _resized(_picture("photo"), height, width, "L" if channels == 1 else "RGB")
    return np.stack([image.reshape(height, width, channels)] * BATCH).astype(np.float32) / 255.0


def _value(tensor: Tensor, sidecar: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """BATCH rows for one input, by dtype and rank, then by name (VALUES), then its default."""
    info = sidecar["info"]
    if tensor.dtype == "string":
        if tensor.name in PICTURES:
            return np.array([_png(_picture(PICTURES[tensor.name]))] * BATCH, dtype=object)
        if tensor.name in TEXTS:
            return np.array([TEXTS[tensor.name].encode()] * BATCH, dtype=object)
    elif tensor.dtype == "float32" and len(tensor.shape) == 2:  # latent points
        return rng.standard_normal((BATCH, int(info["latent_dim"]))).astype(np.float32)
    elif tensor.dtype == "float32" and len(tensor.shape) == 4:  # images
        return _unit_images(info["image_shape"])
    elif tensor.dtype == "float32" and len(tensor.shape) == 5:  # the text LM's key/value cache
        cache = info["cache"]
        shape = (BATCH, cache["layers"], cache["heads"], VALUES["position"], cache["head_dim"])
        return np.zeros(shape, np.float32)
    elif tensor.dtype == "int32" and len(tensor.shape) == 2:  # the text LM's prompt ids
        return np.full((BATCH, VALUES["prompt_length"]), VALUES["token"], np.int32)
    labels = info.get("labels") or [None]
    value = {"from_label": labels[0], "to_label": labels[-1]}.get(tensor.name)
    value = VALUES.get(tensor.name, tensor.default) if value is None else value
    if value is None or len(tensor.shape) != 1:
        raise ValueError(f"no request value for input {tensor.name!r} ({tensor.dtype})")
    high = tensor.bounds(sidecar["limits"])[1]
    if high is not None:  # the export's limit may be below the cheap value
        value = np.minimum(value, high)
    return np.broadcast_to(np.asarray(value, dtype=tensor.dtype), (BATCH,)).copy()


def _image_size(signature: Signature, inputs: Mapping[str, np.ndarray]) -> tuple[int, int] | None:
    """The size an image-in/image-out signature must answer: its first encoded image input's,
    or `height` rows with that image's aspect when the signature takes a height."""
    pictures = [t.name for t in signature.inputs if t.name in PICTURES]
    if not pictures or not any(t.is_bytes for t in signature.outputs):
        return None
    height, width = _decoded(inputs[pictures[0]][0]).shape[:2]
    if "height" in inputs:
        wanted = int(inputs["height"][0])
        return wanted, round(width * wanted / height)
    return height, width


def build_probes(contract: Contract, sidecar: Mapping[str, Any]) -> list[Probe]:
    """One probe per signature key: the required ones, and the optional ones the export has."""
    exported = set(sidecar["signatures"])
    keys = [
        key
        for key in contract.signature_keys()
        if key in exported or not contract.signature(key).optional
    ]
    probes = []
    for key in keys:
        signature = contract.signature(key)
        rng = np.random.default_rng(0)
        try:
            inputs = {t.name: _value(t, sidecar, rng) for t in signature.inputs}
        except (KeyError, ValueError) as error:
            raise ValueError(f"signature {key!r}: {error}") from error
        probes.append(Probe(key, signature, inputs, _image_size(signature, inputs)))
    return probes


def prediction_logs(probes: list[Probe], model_name: str) -> list[Any]:
    """The probes as `PredictionLog`s (predict_log.request), TF Serving's warmup records."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for probe in probes:
        log = prediction_log_pb2.PredictionLog()
        request = log.predict_log.request
        request.model_spec.name = model_name
        request.model_spec.signature_name = probe.key
        for tensor in probe.signature.inputs:
            request.inputs[tensor.name].CopyFrom(
                tf.make_tensor_proto(probe.inputs[tensor.name], dtype=tf.as_dtype(tensor.dtype))
            )
        logs.append(log)
    return logs


def write_records(records: list[Any], path: str) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record.SerializeToString(deterministic=True))


def read_prediction_logs(path: str) -> list[Any]:
    """The PredictionLogs of a TFRecord file (a warmup file, or the replay's responses)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records = tf.data.TFRecordDataset(path).as_numpy_iterator()
    return [prediction_log_pb2.PredictionLog.FromString(record) for record in records]


# -- replay and checks ---------------------------------------------------------------------------


def replay(
    model_dir: str, requests_path: str, out_dir: str, timeout_seconds: float
) -> tuple[dict[str, Any], list[Any]]:
    """(report, response logs) of `serving_replay` run in a fresh Python process on the model;
    the responses are kept in `out_dir`.

    The two processes exchange files in a local temporary folder, since `out_dir` may be on any
    filesystem (`ram://` is not shared between processes). A crash or a timeout of that process
    is reported as a load error.
    """
    with tempfile.TemporaryDirectory(prefix="genpipe-replay-") as local:
        requests, responses, report_path = (
            os.path.join(local, f) for f in (WARMUP_FILE, RESPONSES_FILE, REPORT_FILE))
        fileio.copy(requests_path, requests)
        command = [sys.executable, "-m", REPLAY_MODULE, model_dir, requests, responses,
                   report_path]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=timeout_seconds
            )
        except subprocess.TimeoutExpired:
            return {"load_error": f"the replay took over {timeout_seconds:g} s", "calls": []}, []
        if done.returncode != 0 or not os.path.isfile(report_path):
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            return {"load_error": f"the replay exited with code {done.returncode}: {tail}",
                    "calls": []}, []
        with open(report_path, encoding="utf-8") as handle:
            report = json.load(handle)
        if not os.path.isfile(responses):
            return report, []
        fileio.copy(responses, os.path.join(out_dir, RESPONSES_FILE), overwrite=True)
        return report, read_prediction_logs(responses)


def first_lines(text: str) -> str:
    """The first lines of an error (TF appends graph stacks), as one short line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    short = " | ".join(lines[:ERROR_LINES])
    return short if len(short) <= ERROR_CHARS else short[: ERROR_CHARS - 3] + "..."


def _decoded(data: bytes) -> np.ndarray:
    """The pixels of a PNG; ValueError when `data` is not one."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise ValueError(f"is {image.format}, not PNG")
            return np.asarray(image)
    except OSError as error:
        raise ValueError("is not a PNG") from error


def _check_output(tensor: Tensor, value: np.ndarray, image_size: tuple[int, int] | None
                  ) -> list[str]:
    name = tensor.name
    if value.ndim != len(tensor.shape) or value.shape[0] != BATCH:
        return [f"{name} has shape {list(value.shape)}, expected {len(tensor.shape)} dimensions "
                f"led by the batch of {BATCH}"]
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        return [f"{name} is not finite"]
    if tensor.dtype != "string":
        return []
    if not tensor.is_bytes:
        return [] if all(len(text) for text in value.flat) else [f"{name} has an empty text"]
    problems = []
    for row, data in enumerate(value.flat):
        try:
            image = _decoded(data)
        except ValueError as error:
            problems.append(f"{name}[{row}] {error}")
            continue
        if image_size is not None and image.shape[:2] != image_size:
            problems.append(f"{name}[{row}] is {image.shape[0]}x{image.shape[1]}, the input "
                            f"asks for {image_size[0]}x{image_size[1]}")
        elif image_size is not None and image.std() == 0:
            problems.append(f"{name}[{row}] is a constant image")
    return problems


def check_response(probe: Probe, response: Any) -> list[str]:
    """What in `response` (a PredictResponse) breaks the contract of the probed signature."""
    import tensorflow as tf

    problems = []
    for tensor in probe.signature.outputs:
        if tensor.name not in response.outputs:
            problems.append(f"output {tensor.name} is missing")
            continue
        proto = response.outputs[tensor.name]
        dtype = tf.as_dtype(proto.dtype).name
        if dtype != tensor.dtype:
            problems.append(f"{tensor.name} is {dtype}, the contract says {tensor.dtype}")
            continue
        problems += _check_output(tensor, tf.make_ndarray(proto), probe.image_size)
    return problems


def _sample(probe: Probe, response: Any) -> bytes | None:
    """The first PNG of a response, if any."""
    import tensorflow as tf

    for tensor in probe.signature.outputs:
        if tensor.is_bytes and tensor.name in response.outputs:
            return tf.make_ndarray(response.outputs[tensor.name]).flat[0]
    return None


def _judge(probe: Probe, call: Mapping[str, Any], response: Any, out_dir: str) -> Check:
    """The check of one replayed call: its error, or what its response breaks. The first PNG it
    answered is kept in `<out_dir>/samples/<key>.png` for people to look at."""
    if call["error"]:
        return Check(False, f"{probe.key}: {first_lines(call['error'])}")
    problems = check_response(probe, response)
    sample = _sample(probe, response)
    if sample is not None:
        with fileio.open(os.path.join(out_dir, SAMPLES_DIR, f"{probe.key}.png"), "wb") as handle:
            handle.write(sample)
    if problems:
        return Check(False, f"{probe.key}: " + "; ".join(problems))
    return Check(True, f"{probe.key} {call['seconds']:.2f} s")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The decision, a message naming each signature, and properties for the blessing."""

    blessed: bool
    message: str
    properties: dict[str, Any]


def validate(model_dir: str, model_name: str, out_dir: str, timeout_seconds: float = 600
             ) -> Outcome:
    """Probe every signature of the SavedModel at `model_dir` served as `model_name`; writes the
    warmup file, the responses, a report and sample PNGs into `out_dir`."""
    started = time.monotonic()
    samples = os.path.join(out_dir, SAMPLES_DIR)
    fileio.makedirs(samples)
    try:
        sidecar = read_sidecar(model_dir)
        probes = build_probes(contract_for(model_name), sidecar)
    except (OSError, KeyError, ValueError) as error:
        message = f"not blessed: failed requests: {first_lines(str(error))}"
        return Outcome(False, message, {"failed_signatures": "requests"})
    warmup = os.path.join(out_dir, WARMUP_FILE)
    write_records(prediction_logs(probes, model_name), warmup)
    report, answers = replay(model_dir, warmup, out_dir, timeout_seconds)

    checks = []
    if sidecar["model"] != model_name:
        checks.append(Check(False, f"sidecar: the export names itself {sidecar['model']!r}"))
    if report["load_error"]:
        checks.append(Check(False, f"load: {first_lines(report['load_error'])}"))
    for probe, call, answer in zip(probes, report["calls"], answers, strict=False):
        checks.append(_judge(probe, call, answer.predict_log.response, out_dir))
    blessed, message = decide(checks)
    report_out = {"model_name": model_name, "blessed": blessed, "message": message,
                  "checks": [dataclasses.asdict(c) for c in checks], **report}
    with fileio.open(os.path.join(out_dir, REPORT_FILE), "w") as handle:
        json.dump(report_out, handle, indent=2)
    properties = {
        "signatures": len(probes),
        "warmup_requests": len(probes),
        "failed_signatures": ",".join(c.text.split(":")[0] for c in checks if not c.passed),
        "load_seconds": report.get("load_seconds"),
        "validation_seconds": round(time.monotonic() - started, 3),
        "samples": samples if fileio.listdir(samples) else None,
        **{f"seconds_{c['signature']}": round(c["seconds"], 3)
           for c in report["calls"] if c["seconds"] is not None},
    }
    return Outcome(blessed, message, properties)


@tfx.dsl.components.component
def ServingValidator(  # noqa: N802 (TFX component names are classes)
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.InfraBlessing],
    model_name: tfx.dsl.components.Parameter[str],
    timeout_seconds: tfx.dsl.components.Parameter[int] = 600,
) -> None:
    """Blesses `model` (served as `model_name`) when every signature of its contract answers on
    TF Serving's loading path; `<blessing>/tf_serving_warmup_requests` holds the requests."""
    outcome = validate(
        path_utils.serving_model_path(model.uri), model_name, blessing.uri, timeout_seconds
    )
    with fileio.open(os.path.join(blessing.uri, "INFRA_BLESSED" if outcome.blessed
                                  else "INFRA_NOT_BLESSED"), "w") as handle:
        handle.write(outcome.message + "\n")
    set_properties(blessing, {
        **outcome.properties, BLESSED: outcome.blessed, CURRENT_MODEL_ID: model.id,
        "current_model": model.uri, BLESSING_MESSAGE: outcome.message, "model_name": model_name,
    })
    print(f"  serving validation: {outcome.message}", flush=True)
