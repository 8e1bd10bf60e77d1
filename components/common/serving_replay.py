"""Replay TF Serving warmup requests on TF Serving's own loading path, in a process of its own.

`python -m components.common.serving_replay MODEL_DIR REQUESTS RESPONSES REPORT` imports the
`serve` MetaGraphDef of MODEL_DIR into a fresh Graph and Session with
`tf.compat.v1.saved_model.loader.load` (variables restored through `saver_def`, the init op run),
as tensorflow_model_server does, and runs every `PredictionLog` of the REQUESTS TFRecord (the
warmup file format) by the SignatureDef's tensor names. It writes RESPONSES (one PredictionLog
with request and response per request, in order; the response is empty when the call failed) and
REPORT (JSON: load time and error, then each call's signature, time and error).

Only TensorFlow, tensorflow_serving.apis and the standard library are imported here, so a model
that answers proves it runs without genpipe's code; `tf.saved_model.load`, which restores through
the Python object graph and runs models TF Serving refuses, is never used.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

SERVE_TAG = "serve"


def error_text(error: BaseException) -> str:
    """`ErrorClass: message`; TF's runtime errors without the Python traceback."""
    message = error.message if isinstance(error, tf.errors.OpError) else str(error)
    return f"{type(error).__name__}: {message}"


def predict(
    session: tf.compat.v1.Session, signature: Any, request: predict_pb2.PredictRequest
) -> predict_pb2.PredictResponse:
    """Run one request through the session by the signature's tensor names.

    Like TF Serving, the request must give exactly the signature's inputs, each of its dtype.
    """
    given, wanted = set(request.inputs), set(signature.inputs)
    if given != wanted:
        raise ValueError(
            f"inputs {sorted(given)} do not match the signature's {sorted(wanted)}"
        )
    feeds = {}
    for alias, info in signature.inputs.items():
        tensor = request.inputs[alias]
        if tensor.dtype != info.dtype:
            raise ValueError(
                f"input {alias} is {tf.as_dtype(tensor.dtype).name}, the signature expects "
                f"{tf.as_dtype(info.dtype).name}"
            )
        feeds[info.name] = tf.make_ndarray(tensor)
    aliases = sorted(signature.outputs)
    values = session.run([signature.outputs[alias].name for alias in aliases], feed_dict=feeds)
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for alias, value in zip(aliases, values, strict=True):
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return response


def replay(model_dir: str, requests_path: str, responses_path: str) -> dict[str, Any]:
    """Load `model_dir`, answer every request; returns the report (see the module docstring)."""
    records = tf.data.TFRecordDataset(requests_path).as_numpy_iterator()
    logs = [prediction_log_pb2.PredictionLog.FromString(record) for record in records]
    report: dict[str, Any] = {"load_seconds": None, "load_error": None, "calls": []}
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session, graph.as_default():
        started = time.monotonic()
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], model_dir)
        except Exception as error:  # any load failure is the finding
            report["load_error"] = error_text(error)
            return report
        report["load_seconds"] = time.monotonic() - started
        graph.finalize()  # requests only run the graph, as in a server
        with tf.io.TFRecordWriter(responses_path) as writer:
            for log in logs:
                request = log.predict_log.request
                key = request.model_spec.signature_name
                call: dict[str, Any] = {"signature": key, "seconds": None, "error": None}
                answered = prediction_log_pb2.PredictionLog()
                answered.predict_log.request.CopyFrom(request)
                started = time.monotonic()
                try:
                    if key not in meta_graph.signature_def:
                        raise KeyError(
                            f"signature {key!r} is not in the SavedModel; it has "
                            f"{sorted(meta_graph.signature_def)}"
                        )
                    response = predict(session, meta_graph.signature_def[key], request)
                    answered.predict_log.response.CopyFrom(response)
                    call["seconds"] = time.monotonic() - started
                except Exception as error:  # reported per signature
                    call["error"] = error_text(error)
                report["calls"].append(call)
                writer.write(answered.SerializeToString(deterministic=True))
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, requests_path, responses_path, report_path = argv
    report = replay(model_dir, requests_path, responses_path)
    with open(report_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
