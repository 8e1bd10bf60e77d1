"""Warmup: replay a version's recorded requests before it becomes available, as TF Serving does
with `assets.extra/tf_serving_warmup_requests` (a TFRecord file of `PredictionLog` protos)."""

from __future__ import annotations

import posixpath

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving.errors import invalid_argument
from serving.predict import run_signature
from serving.servable import Servable
from serving.tensors import to_ndarray

WARMUP_FILE = posixpath.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


def warmup_path(servable: Servable) -> str:
    return posixpath.join(servable.path, WARMUP_FILE)


def replay_warmup(servable: Servable) -> int:
    """Run every recorded Predict request against ``servable``; returns how many ran.

    A failing request fails the load (the version is reported with the error), like TF Serving.
    """
    path = warmup_path(servable)
    if not tf.io.gfile.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS + 1):
        count += 1
        if count > MAX_WARMUP_RECORDS:
            raise invalid_argument(f"{path} has more than {MAX_WARMUP_RECORDS} warmup records")
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") != "predict_log":
            raise invalid_argument(
                f"{path}: record {count} is a {log.WhichOneof('log_type')}; this server replays "
                "predict_log records only"
            )
        request = log.predict_log.request
        inputs = {name: to_ndarray(proto, name) for name, proto in request.inputs.items()}
        run_signature(
            servable, request.model_spec.signature_name, inputs, list(request.output_filter)
        )
    return count
