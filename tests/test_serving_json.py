"""TF Serving's REST JSON: request values to typed arrays and outputs back, without a server."""

from __future__ import annotations

import base64
import json
import math

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving import rest_json
from serving.errors import ServingError, clean_tf_message, http_status


def infos(**dtypes: int) -> dict[str, meta_graph_pb2.TensorInfo]:
    return {name: meta_graph_pb2.TensorInfo(dtype=dtype) for name, dtype in dtypes.items()}


def test_row_format_batches_named_instances():
    document = {"instances": [{"a": [1, 2], "b": "x"}, {"a": [3, 4], "b": {"b64": "eQ=="}}]}
    arrays, fmt = rest_json.inputs_from_document(
        document, infos(a=types_pb2.DT_FLOAT, b=types_pb2.DT_STRING)
    )
    assert fmt == rest_json.ROW
    assert arrays["a"].dtype == np.float32 and arrays["a"].tolist() == [[1, 2], [3, 4]]
    assert arrays["b"].tolist() == [b"x", b"y"]


def test_columnar_format_takes_whole_tensors_and_bare_values():
    arrays, fmt = rest_json.inputs_from_document(
        {"inputs": [[1, 2, 3]]}, infos(x=types_pb2.DT_INT64)
    )
    assert fmt == rest_json.COLUMNAR
    assert arrays["x"].dtype == np.int64 and arrays["x"].shape == (1, 3)


@pytest.mark.parametrize(
    "value, dtype, needle",
    [
        ([1, 2.5], types_pb2.DT_INT32, "DT_INT32"),
        ([2**31], types_pb2.DT_INT32, "[-2147483648, 2147483647]"),
        ([-1], types_pb2.DT_UINT8, "[0, 255]"),
        ([1e39], types_pb2.DT_FLOAT, "loss of precision"),
        ([[1], [1, 2]], types_pb2.DT_FLOAT, "rectangular"),
        ([[1], 2], types_pb2.DT_FLOAT, "rectangular"),
        ([{"b64": "!!"}], types_pb2.DT_STRING, "base64"),
        ([{"b65": "AA=="}], types_pb2.DT_STRING, "b64"),
        ([1], types_pb2.DT_BOOL, "DT_BOOL"),
        ([None], types_pb2.DT_FLOAT, "DT_FLOAT"),
    ],
)
def test_bad_values_name_the_input_and_the_problem(value, dtype, needle):
    with pytest.raises(ServingError) as caught:
        rest_json.to_array(value, dtype, "t")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'t'" in caught.value.message and needle in caught.value.message


def test_row_outputs_are_per_example_objects_and_columnar_whole_tensors():
    outputs = {
        "score": np.float32([0.2, 1.0]),
        "label_bytes": np.array([b"\x89PNG", b"ok"], dtype=object),
        "name": np.array([b"caf\xc3\xa9", b"\xff\xfe"], dtype=object),
    }
    rows = rest_json.outputs_to_document(outputs, rest_json.ROW)["predictions"]
    assert rows[0]["score"] == 0.2  # shortest float32 text, not 0.20000000298023224
    assert rows[0]["label_bytes"] == {"b64": base64.b64encode(b"\x89PNG").decode()}
    assert rows[1]["label_bytes"] == {"b64": base64.b64encode(b"ok").decode()}  # _bytes: always
    assert rows[0]["name"] == "café"
    assert rows[1]["name"] == {"b64": base64.b64encode(b"\xff\xfe").decode()}  # not UTF-8
    columns = rest_json.outputs_to_document({"y": np.int64([[1, 2]])}, rest_json.COLUMNAR)
    assert columns == {"outputs": [[1, 2]]}


def test_row_outputs_need_a_common_batch_dimension():
    with pytest.raises(ServingError):
        rest_json.outputs_to_document({"a": np.float32(1.0)}, rest_json.ROW)
    with pytest.raises(ServingError):
        rest_json.outputs_to_document(
            {"a": np.float32([1, 2]), "b": np.float32([1])}, rest_json.ROW
        )


def test_non_finite_floats_are_written_like_tf_serving():
    document = rest_json.outputs_to_document(
        {"y": np.float32([np.nan, np.inf, -np.inf])}, rest_json.COLUMNAR
    )
    text = rest_json.dumps(document).decode()
    assert text == '{"outputs": [NaN, Infinity, -Infinity]}'
    assert math.isnan(json.loads(text)["outputs"][0])


def test_http_status_follows_tf_serving():
    assert http_status(grpc.StatusCode.INVALID_ARGUMENT) == 400
    assert http_status(grpc.StatusCode.FAILED_PRECONDITION) == 400
    assert http_status(grpc.StatusCode.NOT_FOUND) == 404
    assert http_status(grpc.StatusCode.UNIMPLEMENTED) == 501
    assert http_status(grpc.StatusCode.UNAUTHENTICATED) == 401
    assert http_status(grpc.StatusCode.RESOURCE_EXHAUSTED) == 429


def test_tf_error_messages_lose_the_graph_noise():
    raw = (
        "Graph execution error:\n\nDetected at node assert/Assert defined at (most recent call "
        "last):\n<stack traces unavailable>\nassertion failed: [temperature: must be in [0, 2]] "
        "[3]\n\t [[{{node assert/Assert}}]] [Op:__inference_signature_wrapper_211]"
    )
    assert clean_tf_message(raw) == "assertion failed: [temperature: must be in [0, 2]] [3]"
