"""`genpipe.serving.GenerationService`: text generation streamed word by word.

The messages and the service are declared here as descriptors (there is no protoc on the build
machines) and added to protobuf's default pool next to TF Serving's `model.proto` and
`predict.proto`, whose messages they use. The equivalent `genpipe/serving/generation.proto`:

    syntax = "proto3";
    package genpipe.serving;
    import "tensorflow_serving/apis/model.proto";
    import "tensorflow_serving/apis/predict.proto";

    message StreamedWord {
      int32 row = 1;       // the prompt's row in the request
      int32 index = 2;     // the word's index in the row's continuation
      int32 token_id = 3;
      string word = 4;
      bool last = 5;       // no more words come for this row
    }
    message GenerateStreamResponse {
      tensorflow.serving.ModelSpec model_spec = 1;  // the version that answered
      repeated StreamedWord words = 2;              // the words of one decoding call
    }
    service GenerationService {
      // Inputs of text_lm `generate`; model_spec.signature_name "" or "generate".
      rpc GenerateStream(tensorflow.serving.PredictRequest) returns (stream GenerateStreamResponse);
    }
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, symbol_database
from tensorflow_serving.apis import model_pb2, predict_pb2

from contracts import text_lm

PACKAGE = "genpipe.serving"
FILE = "genpipe/serving/generation.proto"
SERVICE = f"{PACKAGE}.GenerationService"
METHOD = "GenerateStream"
GENERATE_STREAM = f"/{SERVICE}/{METHOD}"  # the full method path

_FIELD = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name=FILE,
        package=PACKAGE,
        syntax="proto3",
        dependency=[model_pb2.DESCRIPTOR.name, predict_pb2.DESCRIPTOR.name],
    )
    word = proto.message_type.add(name="StreamedWord")
    for number, (name, kind) in enumerate(
        [
            ("row", _FIELD.TYPE_INT32),
            ("index", _FIELD.TYPE_INT32),
            ("token_id", _FIELD.TYPE_INT32),
            ("word", _FIELD.TYPE_STRING),
            ("last", _FIELD.TYPE_BOOL),
        ],
        start=1,
    ):
        word.field.add(name=name, number=number, type=kind, label=_FIELD.LABEL_OPTIONAL)
    response = proto.message_type.add(name="GenerateStreamResponse")
    response.field.add(
        name="model_spec",
        number=1,
        type=_FIELD.TYPE_MESSAGE,
        label=_FIELD.LABEL_OPTIONAL,
        type_name=".tensorflow.serving.ModelSpec",
    )
    response.field.add(
        name="words",
        number=2,
        type=_FIELD.TYPE_MESSAGE,
        label=_FIELD.LABEL_REPEATED,
        type_name=f".{PACKAGE}.StreamedWord",
    )
    service = proto.service.add(name=SERVICE.rsplit(".", 1)[1])
    service.method.add(
        name=METHOD,
        input_type=".tensorflow.serving.PredictRequest",
        output_type=f".{PACKAGE}.GenerateStreamResponse",
        server_streaming=True,
    )
    return proto


def _messages() -> tuple[type, type]:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(FILE)
    except KeyError:
        pool.AddSerializedFile(_file().SerializeToString())
    # The default symbol database reuses TF Serving's registered classes (ModelSpec) for fields.
    database = symbol_database.Default()
    return tuple(
        database.GetPrototype(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in ("StreamedWord", "GenerateStreamResponse")
    )


StreamedWord, GenerateStreamResponse = _messages()

# What the word-by-word signatures say of each call, as the contract names it (a rename fails
# here, at import).
INDEX, TOKEN_IDS, WORD, DONE = (
    text_lm.GENERATE_STEP.output(name).name for name in ("index", "token_ids", "word", "done")
)
MAX_TOKENS = text_lm.GENERATE_STEP.input("max_tokens").name

# The server's handler: a PredictRequest and the call's context -> the responses, as they come.
StreamHandler = Callable[[predict_pb2.PredictRequest, grpc.ServicerContext], Iterator]


def add_generation_service(server: grpc.Server, generate_stream: StreamHandler) -> None:
    """Serve GenerateStream on ``server`` with ``generate_stream(request, context)``."""
    handler = grpc.unary_stream_rpc_method_handler(
        generate_stream,
        request_deserializer=predict_pb2.PredictRequest.FromString,
        response_serializer=GenerateStreamResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
    )


def generate_stream_stub(channel: grpc.Channel) -> grpc.UnaryStreamMultiCallable:
    """The client side: ``stub(request, timeout=..., metadata=...)`` iterates the responses."""
    return channel.unary_stream(
        GENERATE_STREAM,
        request_serializer=predict_pb2.PredictRequest.SerializeToString,
        response_deserializer=GenerateStreamResponse.FromString,
    )


def streamed_words(outputs: Mapping[str, np.ndarray], settings: Mapping[str, np.ndarray]) -> list:
    """The `StreamedWord`s of one `generate_start` or `generate_step` call (its ``outputs``,
    with the ``settings`` it ran with), position by position: the words that belong to their
    row's continuation (0 <= index < max_tokens), ``last`` on a row's final word."""
    index, token_ids, word = (outputs[name] for name in (INDEX, TOKEN_IDS, WORD))
    max_tokens = settings[MAX_TOKENS]
    rows, positions = index.shape
    return [
        StreamedWord(
            row=row,
            index=int(index[row, k]),
            token_id=int(token_ids[row, k]),
            word=_text(word[row, k]),
            last=bool(index[row, k] == max_tokens[row] - 1),
        )
        for k in range(positions)
        for row in range(rows)
        if 0 <= index[row, k] < max_tokens[row]
    ]


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")
