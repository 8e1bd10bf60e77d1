"""Property-based fuzzing (issue 13) of REST JSON bodies and gRPC PredictRequests against one
in-process server on toy models: random dtypes, shapes, nesting, sizes, b64, unicode (lone
surrogates too), NaN/inf, negative and huge values, bogus model and signature names.

Every answer must be a TF Serving status (never INTERNAL/UNKNOWN, never HTTP 500), no request
may hang, and a normal request must still succeed afterwards. `GENPIPE_FUZZ_CASES` sets the
cases per protocol: 300 in the suite (REST costs ~30 ms a case on a loaded 2-core machine);
`make soak` runs 2,000 per protocol.
"""

from __future__ import annotations

import base64
import json
import os
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
import toy_models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from test_serving import free_port

from serving import request_limits
from serving.server import ModelServer, ServerOptions, build_manager

SUITE_CASES = 300  # in the suite; `make soak` sets GENPIPE_FUZZ_CASES=2000 (the count)
CASES = int(os.environ.get("GENPIPE_FUZZ_CASES", SUITE_CASES))
ANSWER_WITHIN = 20.0  # seconds: a case slower than this counts as a hang
FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Small limits: the fuzzer explores refusals and runs, not 64 MiB allocations.
LIMITS = request_limits.RequestLimits(
    max_tensor_elements=4096, max_request_bytes=1 << 20, max_string_bytes=1 << 16
)
MODELS = {  # model -> signature -> input names (the toy models' own)
    "strings": {"serving_default": ["text"], "png": ["value"], "decode": ["image"]},
    "scale": {"serving_default": ["x", "temperature"], "sample": ["seed"]},
    "counter": {"serving_default": ["x"]},
}
ALLOWED_GRPC = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,
}
ALLOWED_HTTP = {200, 400, 404, 413, 429, 501}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    toy_models.export_and_push(toy_models.StringsModel(), root / "strings", 1)
    toy_models.export_and_push(toy_models.ScaleModel(), root / "scale", 1)
    toy_models.export_and_push(toy_models.CounterModel(2), root / "counter", 2)
    server = ModelServer(
        build_manager(models_root=str(root), poll_wait_seconds=0),
        ServerOptions(port=0, rest_api_port=free_port(), workers=4, max_message_mb=4),
    )
    request_limits.configure(LIMITS)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    server.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    server.rest = f"http://127.0.0.1:{server.rest_port}"
    server.session = requests.Session()
    server.seen = {"grpc": {}, "rest": {}}  # outcome -> count, for the report below
    yield server
    print("\nfuzz outcomes:", json.dumps(server.seen, sort_keys=True))
    server.session.close()
    channel.close()
    server.stop(grace=1)
    request_limits.configure(request_limits.DEFAULTS)


def _count(server, protocol: str, outcome: str) -> None:
    seen = server.seen[protocol]
    seen[outcome] = seen.get(outcome, 0) + 1


def _normal_requests_succeed(server) -> None:
    answer = server.session.post(f"{server.rest}/v1/models/counter:predict",
                                 json={"instances": [1.0]}, timeout=30)  # fmt: skip
    assert answer.status_code == 200 and answer.json()["predictions"][0]["y"] == 3.0
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "counter"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([1])))
    response = server.stub.Predict(request, timeout=30)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [3.0]


# -- strategies ----------------------------------------------------------------------------------

# model -> signature -> input -> (dtype, trailing dimensions after the batch)
VALID = {
    "strings": {"serving_default": {"text": ("string", ())}, "png": {"value": ("float32", ())},
                "decode": {"image": ("image", ())}},
    "scale": {"serving_default": {"x": ("float32", (3,)), "temperature": ("float32", ())},
              "sample": {"seed": ("int64", ())}},
    "counter": {"serving_default": {"x": ("float32", ())}},
}  # fmt: skip
PNG = tf.io.encode_png(np.zeros((2, 3, 1), np.uint8)).numpy()

names = st.one_of(st.sampled_from([*MODELS, "nosuch", "", "..", "a/b"]), st.text(max_size=12))
signature_names = st.one_of(
    st.sampled_from(sorted({s for model in MODELS.values() for s in model}) + ["", "nosuch"]),
    st.text(max_size=12),
)
input_names = st.one_of(
    st.sampled_from(sorted({i for m in MODELS.values() for s in m.values() for i in s})),
    st.text(max_size=8),
)
huge_ints = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**400, -(10**400)]),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
b64 = st.one_of(
    st.binary(max_size=64).map(lambda data: {"b64": base64.b64encode(data).decode()}),
    st.text(max_size=16).map(lambda text: {"b64": text}),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-1000, 1000), huge_ints, floats,
    st.text(max_size=16), st.sampled_from(["\ud800", "\udfff", "a\ud800b"]), b64,
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(input_names, inner, max_size=4),
    ),
    max_leaves=40,
)
deep = st.integers(1, 3000).map(lambda depth: "[" * depth + "1.0" + "]" * depth)


def _leaf(draw, dtype: str):
    """One value of ``dtype``: mostly in range, sometimes NaN/inf, huge or negative."""
    if dtype == "float32":
        return draw(st.one_of(st.floats(0, 2), floats, st.integers(-(2**40), 2**40)))
    if dtype == "int64":
        return draw(st.one_of(st.integers(0, 1000), st.integers(-(2**63), 2**63 - 1)))
    if dtype == "image":
        return draw(st.one_of(st.just(PNG), st.binary(max_size=64), st.just(PNG[:20])))
    return draw(st.one_of(st.binary(max_size=32), st.text(max_size=16).map(str.encode)))


@st.composite
def valid_inputs(draw) -> tuple[str, str, dict[str, np.ndarray]]:
    """(model, signature, numpy inputs) the signature takes: right names, dtypes and ranks."""
    model = draw(st.sampled_from(sorted(VALID)))
    signature = draw(st.sampled_from(sorted(VALID[model])))
    rows = draw(st.integers(1, 4))
    inputs = {}
    for name, (dtype, tail) in VALID[model][signature].items():
        count = rows * int(np.prod(tail))
        values = [_leaf(draw, dtype) for _ in range(count)]
        if dtype in ("string", "image"):
            array = np.empty(count, dtype=object)
            array[:] = values
        else:
            array = np.array(values, dtype=np.float64 if dtype == "float32" else object)
        inputs[name] = array.reshape((rows, *tail))
    return model, signature, inputs


def _json_value(array: np.ndarray):
    """A numpy input as JSON: bytes as {"b64": ...}, numbers as they are."""
    if array.dtype == object and array.size and isinstance(array.flat[0], bytes):
        holder = np.empty(array.size, dtype=object)
        holder[:] = [{"b64": base64.b64encode(v).decode()} for v in array.ravel()]
        return holder.reshape(array.shape).tolist()
    return array.tolist()


@st.composite
def valid_documents(draw) -> tuple[str, dict]:
    """(model, body) of a request the signature accepts in form (its values may be odd)."""
    model, signature, inputs = draw(valid_inputs())
    columns = {name: _json_value(array) for name, array in inputs.items()}
    if draw(st.booleans()):
        rows = len(next(iter(inputs.values())))
        body = {"instances": [{k: v[i] for k, v in columns.items()} for i in range(rows)]}
    else:
        body = {"inputs": columns}
    return model, {"signature_name": signature, **body}


@st.composite
def rest_requests(draw) -> tuple[str, str, bytes]:
    """(method, path, body) for a REST call."""
    model = draw(names)
    where = draw(st.sampled_from(["", "/versions/{v}", "/labels/{v}"]))
    where = where.format(v=draw(st.one_of(st.sampled_from(["1", "2", "stable"]),
                                          st.integers(0, 10**25).map(str))))  # fmt: skip
    path = f"/v1/models/{requests.utils.quote(model, safe='')}{where}"
    verb = draw(st.sampled_from([":predict", ":predict", ":predict", ":classify", "/metadata",
                                 ""]))  # fmt: skip
    method = "POST" if verb.startswith(":") else "GET"
    document: dict = {}
    if draw(st.booleans()):
        document["signature_name"] = draw(st.one_of(signature_names, scalars))
    key = draw(st.sampled_from(["instances", "inputs", "instances", "inputs", "other"]))
    document[key] = draw(json_values)
    kind = draw(st.sampled_from(["valid", "valid", "valid", "document", "document", "deep",
                                 "bytes", "cut"]))  # fmt: skip
    if kind in ("valid", "cut"):
        model, document = draw(valid_documents())
        path, verb, method = f"/v1/models/{model}", ":predict", "POST"
    text = json.dumps(document, allow_nan=True)
    if kind == "deep":
        text = '{"inputs": ' + draw(deep) + "}"
    elif kind == "bytes":
        return method, path + verb, draw(st.binary(max_size=200))
    elif kind == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    return method, path + verb, text.encode("utf-8", "surrogatepass")


DTYPES = [
    types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT64,
    types_pb2.DT_UINT8, types_pb2.DT_STRING, types_pb2.DT_BOOL, types_pb2.DT_HALF,
    types_pb2.DT_INT16, types_pb2.DT_COMPLEX64, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT,
    types_pb2.DT_INVALID, 9999,
]  # fmt: skip
dims = st.one_of(st.integers(0, 4), st.integers(-3, 50), st.sampled_from([2**31, 2**40, 2**62]))


@st.composite
def tensor_protos(draw) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=draw(st.sampled_from(DTYPES)))
    if draw(st.integers(0, 9)) == 0:
        proto.tensor_shape.unknown_rank = True
    for size in draw(st.lists(dims, max_size=draw(st.sampled_from([2, 3, 12])))):
        proto.tensor_shape.dim.add(size=size)
    field = draw(st.sampled_from(["float_val", "double_val", "int_val", "int64_val", "bool_val",
                                  "string_val", "half_val", "tensor_content", "none"]))  # fmt: skip
    count = st.integers(0, 40)
    if field == "float_val":
        proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=40)))
    elif field == "double_val":
        proto.double_val.extend(draw(st.lists(floats, max_size=40)))
    elif field in ("int_val", "half_val"):
        getattr(proto, field).extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1),
                                                   max_size=40)))  # fmt: skip
    elif field == "int64_val":
        proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40)))
    elif field == "bool_val":
        proto.bool_val.extend(draw(st.lists(st.booleans(), max_size=40)))
    elif field == "string_val":
        proto.string_val.extend(draw(st.lists(st.binary(max_size=64), max_size=draw(count))))
    elif field == "tensor_content":
        proto.tensor_content = draw(st.binary(max_size=256))
    return proto


@st.composite
def predict_requests(draw) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    if draw(st.integers(0, 2)):  # two in three: a well-formed request, maybe mutated once
        model, signature, inputs = draw(valid_inputs())
        request.model_spec.name, request.model_spec.signature_name = model, signature
        for name, array in inputs.items():
            dtype = VALID[model][signature][name][0]
            dtype = {"image": "string"}.get(dtype, dtype)
            with np.errstate(all="ignore"):
                try:
                    proto = tf.make_tensor_proto(array.astype(object if dtype == "string"
                                                              else dtype))  # fmt: skip
                except (OverflowError, ValueError, TypeError):
                    proto = draw(tensor_protos())
            request.inputs[name].CopyFrom(proto)
        mutation = draw(st.sampled_from(["none", "none", "dtype", "shape", "extra", "filter"]))
        victim = request.inputs[sorted(request.inputs)[0]]
        if mutation == "dtype":
            victim.dtype = draw(st.sampled_from(DTYPES))
        elif mutation == "shape":
            victim.tensor_shape.dim.add(size=draw(dims))
        elif mutation == "extra":
            request.inputs[draw(input_names)].CopyFrom(draw(tensor_protos()))
        elif mutation == "filter":
            request.output_filter.append(draw(st.text(max_size=6)))
        return request
    request.model_spec.name = draw(names)
    request.model_spec.signature_name = draw(signature_names)
    choice = draw(st.sampled_from(["latest", "version", "label"]))
    if choice == "version":
        request.model_spec.version.value = draw(st.integers(-(2**63), 2**63 - 1))
    elif choice == "label":
        request.model_spec.version_label = draw(st.text(max_size=10))
    signatures = MODELS.get(request.model_spec.name, {})
    wanted = signatures.get(request.model_spec.signature_name or "serving_default")
    keys = wanted if wanted and draw(st.booleans()) else draw(st.lists(input_names, max_size=3))
    for key in keys:
        request.inputs[key].CopyFrom(draw(tensor_protos()))
    request.output_filter.extend(draw(st.lists(st.text(max_size=6), max_size=2)))
    return request


# -- the properties ------------------------------------------------------------------------------


@FUZZ
@given(call=rest_requests())
def _fuzz_rest(server, call: tuple[str, str, bytes]) -> None:
    method, path, body = call
    started = time.monotonic()
    answer = server.session.request(method, server.rest + path, data=body,
                                    timeout=ANSWER_WITHIN)  # fmt: skip
    assert time.monotonic() - started < ANSWER_WITHIN
    assert answer.status_code in ALLOWED_HTTP, (method, path, body[:200], answer.text[:300])
    document = answer.json()
    assert document.get("error") if answer.status_code != 200 else "error" not in document
    _count(server, "rest", str(answer.status_code))


@FUZZ
@given(request=predict_requests())
def _fuzz_grpc(server, request: predict_pb2.PredictRequest) -> None:
    try:
        server.stub.Predict(request, timeout=ANSWER_WITHIN)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
        assert code != grpc.StatusCode.DEADLINE_EXCEEDED, "the server hung"
        assert error.details(), code
    assert code in ALLOWED_GRPC, (code, str(request)[:400])
    _count(server, "grpc", code.name)


def test_fuzzed_rest_bodies_get_tf_serving_statuses(server):
    started = time.monotonic()
    _fuzz_rest(server)
    print(f"\nREST: {CASES} cases in {time.monotonic() - started:.1f} s")
    _normal_requests_succeed(server)
    assert sum(server.seen["rest"].values()) >= CASES
    assert server.seen["rest"].get("200") and server.seen["rest"].get("400")


def test_fuzzed_grpc_predict_requests_get_tf_serving_statuses(server):
    started = time.monotonic()
    _fuzz_grpc(server)
    print(f"\ngRPC: {CASES} cases in {time.monotonic() - started:.1f} s")
    _normal_requests_succeed(server)
    assert sum(server.seen["grpc"].values()) >= CASES
    assert server.seen["grpc"].get("OK") and server.seen["grpc"].get("INVALID_ARGUMENT")
