"""gRPC client of genpipe's models behind TensorFlow Serving (the real server or `genpipe serve`).

One typed method per signature of the serving contract (`contracts/`, documented in
docs/serving.md), on top of a generic `predict`; input names, dtypes and defaults come from the
contract. Images come back as `GeneratedImage` (PNG bytes, ``.to_numpy()``, ``.to_pil()``,
``.save()``). A server that cannot be reached raises `ServerUnavailable`; any other failure
raises `ModelServerError` with the gRPC code and the server's message. `generate_stream`
yields text_lm's words as they are generated, over genpipe's GenerateStream RPC
(protos/generation.py) or, on a server without it such as the real TF Serving, as a chain of
`generate_start`/`generate_step` Predict calls.

    with ModelServerClient("127.0.0.1:8500", timeout=30) as client:
        print(client.generate_text("this movie", temperature=0.7, seed=1)[0].text)
        for word in client.generate_stream("this movie", seed=1):
            print(word.word, end=" ", flush=True)
        client.gan_generate([1, 2, 3])[0].save("face.png")
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from client.images import GeneratedImage, image_bytes
from client.inputs import bytes_output, out_of_range, signature_inputs
from contracts import Signature, deepdream, fast_style, gan, style_transfer, text_lm, vae
from protos import generation

DEFAULT_SERVER = "127.0.0.1:8500"
START_HINT = "start one with `genpipe serve --models_root DIR`"
MB = 1024 * 1024
# How `generate_stream` reaches the server: the GenerateStream RPC, Predict calls of the
# word-by-word signatures, or the RPC falling back to Predict calls where it is UNIMPLEMENTED.
TRANSPORTS = ("auto", "stream", "predict")


class ModelServerError(Exception):
    """The server answered a request with an error status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class ServerUnavailable(ModelServerError):
    """No model server answers at the address (down, wrong address, or a TLS mismatch)."""

    def __init__(self, server: str, details: str = ""):
        reason = f" ({details})" if details else ""
        super().__init__(grpc.StatusCode.UNAVAILABLE, f"no model server at {server}{reason}")
        self.server = server

    def __str__(self) -> str:
        return f"{self.message} — {START_HINT}"


@dataclass(frozen=True)
class Prediction:
    """A Predict response: outputs as numpy, and which model version answered."""

    outputs: dict[str, np.ndarray]
    model: str
    version: int
    signature: str

    def __getitem__(self, alias: str) -> np.ndarray:
        return self.outputs[alias]


@dataclass(frozen=True)
class TextGeneration:
    prompt: str
    text: str
    continuation: str
    token_ids: list[int]
    seed: int
    version: int


@dataclass(frozen=True)
class StreamedWord:
    """One word of `generate_stream`: its prompt's row, its index in that row's continuation,
    its token id, and whether it is the row's last word."""

    row: int
    index: int
    token_id: int
    word: str
    last: bool


@dataclass(frozen=True)
class TextScore:
    text: str
    log_likelihood: float
    num_tokens: int
    perplexity: float


@dataclass(frozen=True)
class StyleTransfer:
    image: GeneratedImage
    loss: float


@dataclass(frozen=True)
class VersionState:
    """One entry of GetModelStatus."""

    version: int
    state: str
    error_code: str
    error_message: str


def _strings(values: str | Sequence[str]) -> list[str]:
    return [values] if isinstance(values, str) else list(values)


def _decode(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


class ModelServerClient:
    """gRPC client of a TF Serving compatible server.

    ``root_cert``: PEM bytes or a path, for a server with TLS. ``token``: sent as
    ``authorization: Bearer <token>``. ``timeout``: seconds per call.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        timeout: float = 60.0,
        root_cert: bytes | str | os.PathLike | None = None,
        token: str | None = None,
        max_message_mb: int = 64,
    ):
        self.server = server
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", max_message_mb * MB),
            ("grpc.max_send_message_length", max_message_mb * MB),
        ]
        if root_cert is not None:
            pem = root_cert if isinstance(root_cert, bytes) else Path(root_cert).read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=pem)
            self._channel = grpc.secure_channel(server, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(server, options=options)
        self._metadata = [("authorization", f"Bearer {token}")] if token else None
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ModelServerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: float | None = None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise self._error(error) from None

    def _error(self, error: grpc.RpcError) -> ModelServerError:
        code, details = error.code(), error.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            return ServerUnavailable(self.server, details)
        return ModelServerError(code, details)

    # -- generic API -----------------------------------------------------------------------

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        signature: str = "serving_default",
        version: int | None = None,
        label: str | None = None,
        output_filter: Sequence[str] = (),
        timeout: float | None = None,
    ) -> Prediction:
        """Call one signature; inputs are arrays (or lists) keyed by input name."""
        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        _fill_spec(request.model_spec, model, version, label)
        request.model_spec.signature_name = signature
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self._predictions.Predict, request, timeout)
        return Prediction(
            outputs={k: tf.make_ndarray(v) for k, v in response.outputs.items()},
            model=response.model_spec.name,
            version=response.model_spec.version.value,
            signature=response.model_spec.signature_name,
        )

    def metadata(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """The model's SignatureDefs by signature name."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        _fill_spec(request.model_spec, model, version, label)
        response = self._call(self._predictions.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return dict(signature_map.signature_def)

    def status(self, model: str, *, version: int | None = None) -> list[VersionState]:
        """GetModelStatus for every version of ``model`` the server knows (newest first)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        _fill_spec(request.model_spec, model, version, None)
        response = self._call(self._models.GetModelStatus, request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionState(
                version=entry.version,
                state=state_name(entry.state),
                error_code=grpc.StatusCode.OK.name
                if entry.status.error_code == 0
                else _code_name(entry.status.error_code),
                error_message=entry.status.error_message,
            )
            for entry in response.model_version_status
        ]

    def wait_until_available(
        self, model: str, version: int | None = None, timeout: float = 60.0
    ) -> int:
        """Poll GetModelStatus until ``version`` (or any version) is AVAILABLE; returns it.

        A server that is still starting (not listening yet) or does not know the model yet is
        polled again until ``timeout``; a version that ends with a load error raises
        `ModelServerError` at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = self.status(model, version=version)
            except ServerUnavailable:
                if time.monotonic() > deadline:
                    raise
                states = []
            except ModelServerError as error:
                if error.code != grpc.StatusCode.NOT_FOUND:
                    raise
                states = []
            for state in states:
                if state.state == "AVAILABLE":
                    return state.version
                if version is not None and state.state == "END" and state.error_message:
                    raise ModelServerError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"{model} version {version} failed to load: {state.error_message}",
                    )
            if time.monotonic() > deadline:
                raise ModelServerError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{model} version {version or 'any'} not AVAILABLE after {timeout:g}s",
                )
            time.sleep(0.2)

    def reload_config(self, config) -> None:
        """HandleReloadConfigRequest with a `ModelServerConfig` (e.g. to move a label)."""
        request = model_management_pb2.ReloadConfigRequest(config=config)
        self._call(self._models.HandleReloadConfigRequest, request)

    # -- typed calls: one per signature of the serving contract ---------------------------
    # Arguments left as None take the contract's default (`contracts.<model>`); bounds that are
    # plain numbers are checked before sending, limits fixed at export by the server.

    def call(self, model: str, signature: Signature, **values: Any) -> Prediction:
        """Call a contract signature with inputs by name (defaults from the contract)."""
        return self.predict(model, signature_inputs(signature, values), signature=signature.name)

    def generate_text(
        self,
        prompts: str | Sequence[str],
        *,
        max_tokens: int | Sequence[int] | None = None,
        temperature: float | Sequence[float] | None = None,
        top_k: int | Sequence[int] | None = None,
        top_p: float | Sequence[float] | None = None,
        seed: int | Sequence[int] | None = None,
        model: str = text_lm.MODEL,
    ) -> list[TextGeneration]:
        """`generate`: continue each prompt (temperature 0 = greedy; top_k 0 / top_p 1 = off)."""
        prompts = _strings(prompts)
        values = dict(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
        inputs = signature_inputs(text_lm.GENERATE, {"prompt": prompts, "seed": seed, **values})
        result = self.predict(model, inputs, signature=text_lm.GENERATE.name)
        seeds = inputs["seed"]  # the defaults filled in: each generation says which seed it used
        return [
            TextGeneration(
                prompt=prompt,
                text=_decode(result["text"][i]),
                continuation=_decode(result["continuation"][i]),
                token_ids=result["token_ids"][i][: int(result["num_tokens"][i])].tolist(),
                seed=int(seeds[i]),
                version=result.version,
            )
            for i, prompt in enumerate(prompts)
        ]

    def generate_stream(
        self,
        prompts: str | Sequence[str],
        *,
        max_tokens: int | Sequence[int] | None = None,
        temperature: float | Sequence[float] | None = None,
        top_k: int | Sequence[int] | None = None,
        top_p: float | Sequence[float] | None = None,
        seed: int | Sequence[int] | None = None,
        model: str = text_lm.MODEL,
        version: int | None = None,
        label: str | None = None,
        transport: str = "auto",
        steps: int | None = None,
    ) -> Iterator[StreamedWord]:
        """`generate`, word by word: yields each row's words in order as they are generated;
        joined by spaces they are `generate_text`'s continuation for the same inputs.

        ``transport``: "stream" is genpipe's GenerateStream RPC (the server runs the decoding
        loop; ``timeout`` bounds the whole stream); "predict" chains Predict calls of
        `generate_start` and `generate_step`, which any TF Serving answers (``timeout`` per
        call) — the key/value cache travels both ways in every call, layers x heads x
        position x head_dim floats per row, so long generations of big models need a larger
        ``max_message_mb``; "auto" is the RPC, falling back to Predict calls when the server
        answers UNIMPLEMENTED. ``steps``: positions each `generate_step` Predict call decodes
        (default: the contract's); the RPC's server chooses its own. Leaving the loop early
        cancels the generation.
        """
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {list(TRANSPORTS)}; got {transport!r}")
        values = dict(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
        inputs = signature_inputs(
            text_lm.GENERATE_START, {"prompt": _strings(prompts), "seed": seed, **values}
        )
        if transport != "predict":
            words = self._stream_words(inputs, model, version, label)
            try:
                first = next(words, None)
            except ModelServerError as error:
                if transport == "stream" or error.code != grpc.StatusCode.UNIMPLEMENTED:
                    raise
            else:
                try:
                    if first is not None:
                        yield first
                        yield from words
                finally:
                    words.close()  # cancels the call when the caller stops early
                return
        yield from self._predict_words(inputs, model, version, label, steps)

    def _stream_words(
        self, inputs: dict[str, np.ndarray], model: str, version: int | None, label: str | None
    ) -> Iterator[StreamedWord]:
        """The words of one GenerateStream call; closing this iterator cancels the call."""
        request = predict_pb2.PredictRequest()
        _fill_spec(request.model_spec, model, version, label)
        request.model_spec.signature_name = text_lm.GENERATE.name
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        stub = generation.generate_stream_stub(self._channel)
        responses = stub(request, timeout=self.timeout, metadata=self._metadata)
        try:
            for response in responses:
                for word in response.words:
                    yield _streamed(word)
        except grpc.RpcError as error:
            raise self._error(error) from None
        finally:
            responses.cancel()  # a no-op once the stream has ended

    def _predict_words(
        self,
        inputs: dict[str, np.ndarray],
        model: str,
        version: int | None,
        label: str | None,
        steps: int | None,
    ) -> Iterator[StreamedWord]:
        """The words of `generate_start` and `generate_step` Predict calls, each step sent the
        settings and the state the previous call returned, on the version that started."""
        result = self.predict(
            model, inputs, signature=text_lm.GENERATE_START.name, version=version, label=label
        )
        settings = {tensor.name: inputs[tensor.name] for tensor in text_lm.SETTINGS}
        steps = text_lm.STEPS.default if steps is None else steps
        why = out_of_range(text_lm.STEPS, steps)
        if why:
            raise ValueError(f"steps {why}")
        per_call = np.full(len(inputs[text_lm.PROMPT.name]), steps, np.int32)
        while True:
            for word in generation.streamed_words(result.outputs, settings):
                yield _streamed(word)
            if result[generation.DONE].all():
                return
            state = {tensor.name: result[tensor.name] for tensor in text_lm.STATE}
            result = self.predict(
                model,
                {**settings, **state, text_lm.STEPS.name: per_call},
                signature=text_lm.GENERATE_STEP.name,
                version=result.version,  # the state belongs to this version
            )

    def next_token_probabilities(
        self, prompts: str | Sequence[str], *, model: str = text_lm.MODEL
    ) -> np.ndarray:
        """`serving_default`: probabilities [B, V] of the word after each prompt."""
        return self.call(model, text_lm.NEXT_TOKEN, prompt=_strings(prompts))["probabilities"]

    def score_text(
        self, texts: str | Sequence[str], *, model: str = text_lm.MODEL
    ) -> list[TextScore]:
        """`score`: log-likelihood, scored tokens and perplexity of each text."""
        texts = _strings(texts)
        result = self.call(model, text_lm.SCORE, text=texts)
        return [
            TextScore(
                text=text,
                log_likelihood=float(result["log_likelihood"][i]),
                num_tokens=int(result["num_tokens"][i]),
                perplexity=float(result["perplexity"][i]),
            )
            for i, text in enumerate(texts)
        ]

    # -- vae -------------------------------------------------------------------------------

    def vae_decode(self, z: Any, *, model: str = vae.MODEL) -> list[GeneratedImage]:
        """`decode`: one digit per latent vector z [B, D]."""
        return _images(self.call(model, vae.DECODE, z=z), vae.DECODE)

    def vae_encode(self, images: Any, *, model: str = vae.MODEL) -> tuple[np.ndarray, np.ndarray]:
        """`encode`: (z_mean, z_log_var) of images float32 [B, H, W, C] in [0, 1]."""
        result = self.call(model, vae.ENCODE, images=images)
        return result["z_mean"], result["z_log_var"]

    def vae_sample(
        self, seeds: int | Sequence[int], *, model: str = vae.MODEL
    ) -> list[GeneratedImage]:
        """`sample`: one digit per seed (the same seed gives the same digit)."""
        return _images(self.call(model, vae.SAMPLE, seed=seeds), vae.SAMPLE)

    def vae_latent_grid(
        self, n: int | None = None, extent: float | None = None, *, model: str = vae.MODEL
    ) -> GeneratedImage:
        """`latent_grid`: the chapter's n x n grid of decoded latent points in [-extent, extent]."""
        result = self.call(model, vae.LATENT_GRID, n=n, extent=extent)
        return _images(result, vae.LATENT_GRID)[0]

    def vae_interpolate(
        self, z_a: Any, z_b: Any, *, steps: int | None = None, model: str = vae.MODEL
    ) -> list[GeneratedImage]:
        """`interpolate`: a strip of ``steps`` digits from z_a to z_b [B, D], one per row."""
        result = self.call(model, vae.INTERPOLATE, z_a=z_a, z_b=z_b, steps=steps)
        return _images(result, vae.INTERPOLATE)

    def vae_edit(
        self,
        images: Any,
        *,
        from_label: int | None = None,
        to_label: int | None = None,
        strength: float | None = None,
        model: str = vae.MODEL,
    ) -> list[GeneratedImage]:
        """`edit` (exported when the model has labels): move images along a concept vector."""
        result = self.call(
            model,
            vae.EDIT,
            images=images,
            from_label=from_label,
            to_label=to_label,
            strength=strength,
        )
        return _images(result, vae.EDIT)

    # -- gan -------------------------------------------------------------------------------

    def gan_generate(
        self, seeds: int | Sequence[int], *, model: str = gan.MODEL
    ) -> list[GeneratedImage]:
        """`generate`: one image per seed."""
        return _images(self.call(model, gan.GENERATE, seed=seeds), gan.GENERATE)

    def gan_decode(self, z: Any, *, model: str = gan.MODEL) -> list[GeneratedImage]:
        """`decode`: one image per latent vector z [B, latent_dim]."""
        return _images(self.call(model, gan.DECODE, z=z), gan.DECODE)

    # -- deepdream and style transfer ------------------------------------------------------

    def dream(
        self,
        image: Any,
        *,
        iterations: int | None = None,
        octaves: int | None = None,
        octave_scale: float | None = None,
        step: float | None = None,
        max_loss: float | None = None,
        model: str = deepdream.MODEL,
    ) -> GeneratedImage:
        """`dream`: DeepDream an image (path, bytes, PIL or numpy); defaults are the book's."""
        result = self.call(
            model,
            deepdream.DREAM,
            image=image_bytes(image),
            iterations=iterations,
            octaves=octaves,
            octave_scale=octave_scale,
            step=step,
            max_loss=max_loss,
        )
        return _images(result, deepdream.DREAM)[0]

    def style_transfer(
        self,
        content: Any,
        style: Any,
        *,
        iterations: int | None = None,
        height: int | None = None,
        content_weight: float | None = None,
        style_weight: float | None = None,
        tv_weight: float | None = None,
        model: str = style_transfer.MODEL,
    ) -> StyleTransfer:
        """`transfer`: Gatys et al. style transfer (the book's weights; it runs 4000 steps)."""
        result = self.call(
            model,
            style_transfer.TRANSFER,
            content=image_bytes(content),
            style=image_bytes(style),
            iterations=iterations,
            height=height,
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
        )
        image = _images(result, style_transfer.TRANSFER)[0]
        return StyleTransfer(image=image, loss=float(result["loss"][0]))

    def fast_style(self, image: Any, style: str) -> GeneratedImage:
        """`stylize` of model ``fast_style_<style>``: one forward pass of a trained network."""
        model = fast_style.model_name(style)
        result = self.call(model, fast_style.STYLIZE, image=image_bytes(image))
        return _images(result, fast_style.STYLIZE)[0]


def _images(result: Prediction, signature: Signature) -> list[GeneratedImage]:
    """The signature's `_bytes` output as images (one per example, row by row)."""
    encoded = result[bytes_output(signature)].ravel()
    return [GeneratedImage(bytes(data), result.version) for data in encoded]


def _streamed(word) -> StreamedWord:
    """A `protos.generation.StreamedWord` message as the client's dataclass."""
    return StreamedWord(word.row, word.index, word.token_id, word.word, word.last)


def _fill_spec(spec, model: str, version: int | None, label: str | None) -> None:
    spec.name = model
    if version is not None:
        spec.version.value = version
    if label:
        spec.version_label = label


def _code_name(number: int) -> str:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.name
    return str(number)
