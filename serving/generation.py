"""GenerateStream (genpipe.serving.GenerationService, protos/generation.py): a text_lm
`generate` streamed word by word.

The server runs the export's `generate_start` once, then `generate_step` (a few positions a
call) until every row is done, feeding each call's decoding state (the key/value cache
included) to the next in process: no state crosses the network, and the client gets one
response per call that produced words, the first word alone, then the words of each step call.
Each call depends on the previous one, so the stream bypasses request batching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2

from contracts import text_lm
from protos.generation import DONE, GenerateStreamResponse, streamed_words
from serving.errors import ServingError, failed_precondition, invalid_argument
from serving.manager import ModelManager
from serving.predict import RequestRecord, Spec, request_arrays, run_signature

GENERATE, START, STEP = (
    s.name for s in (text_lm.GENERATE, text_lm.GENERATE_START, text_lm.GENERATE_STEP)
)
STEPS = text_lm.STEPS.name


def _always() -> bool:
    return True


def generate_stream(
    manager: ModelManager,
    request: predict_pb2.PredictRequest,
    record: RequestRecord | None = None,
    deadline: float | None = None,
    is_active: Callable[[], bool] = _always,
) -> Iterator[GenerateStreamResponse]:
    """The responses of one GenerateStream call: ``request`` holds `generate`'s inputs.

    Stops when every row is done; with CANCELLED once ``is_active()`` turns false, with
    DEADLINE_EXCEEDED at ``deadline`` (a `time.monotonic` time). The version stays held (it
    cannot unload) until the stream ends.
    """
    record = record or RequestRecord()
    spec = Spec.from_proto(request.model_spec)
    asked = request.model_spec.signature_name
    if asked not in ("", GENERATE):
        raise invalid_argument(
            f"model_spec.signature_name must be '' or '{GENERATE}' for GenerateStream (it "
            f"streams '{GENERATE}'); got '{asked}'"
        )
    record.model, record.signature = spec.name, GENERATE
    with manager.servable(spec.name, spec.version, spec.label) as servable:
        record.version = str(servable.version)
        missing = [key for key in (START, STEP) if key not in servable.signature_names]
        if missing:
            raise failed_precondition(
                f"model {servable.name} version {servable.version} has no {missing} "
                f"signature, which GenerateStream runs (its signatures: "
                f"{servable.signature_names}); re-export it with the current text_lm export"
            )
        inputs = request_arrays(servable, START, request.inputs)
        settings = {tensor.name: inputs[tensor.name] for tensor in text_lm.SETTINGS}
        # `generate_step` decodes the contract's default number of positions a call: a call
        # costs ~2 ms besides its words, so one per word would double a generation's time.
        steps = np.full(len(inputs[text_lm.PROMPT.name]), text_lm.STEPS.default, np.int32)
        outputs = run_signature(servable, START, inputs, deadline=deadline)
        while True:
            words = streamed_words(outputs, settings)
            if words:
                response = GenerateStreamResponse(words=words)
                response.model_spec.name = servable.name
                response.model_spec.version.value = servable.version
                response.model_spec.signature_name = GENERATE
                yield response
            if np.all(outputs[DONE]):
                return
            if not is_active():
                raise ServingError(grpc.StatusCode.CANCELLED, "the client cancelled the stream")
            state = {tensor.name: outputs[tensor.name] for tensor in text_lm.STATE}
            outputs = run_signature(
                servable, STEP, {**settings, **state, STEPS: steps}, deadline=deadline
            )
