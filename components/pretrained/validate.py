"""`ValidateSignature`: load the exported SavedModel, answer one real request, bless or not.

The simplest honest form of DESIGN.md's "validate on server": the SavedModel is loaded the way
a server loads it (`tf.saved_model.load`, no Python model code), its serving signature is
called once on a real photo, and the model is blessed only when the call works, the output
decodes as a PNG of the expected size and (for style transfer) the loss is finite. The answer
is kept as `<blessing>/sample.png`; the ModelBlessing carries `blessed`, `current_model_id`
(what `LatestBlessedModelStrategy` and the Pusher read), the time of the call and the sizes.
"""

# No `from __future__ import annotations`: the @component decorator reads real annotations.
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from tfx import v1 as tfx
from tfx.utils import path_utils

from components.common.evaluation import BLESSED, BLESSING_MESSAGE, CURRENT_MODEL_ID, set_properties

SAMPLE_FILE = "sample.png"
FAST_STYLE_PREFIX = "fast_style_"


def signature_of(model_name: str) -> str:
    """The serving signature validated for `model_name` (DESIGN.md's contract)."""
    if model_name == "deepdream":
        return "dream"
    if model_name == "style_transfer":
        return "transfer"
    if model_name.startswith(FAST_STYLE_PREFIX) and len(model_name) > len(FAST_STYLE_PREFIX):
        return "stylize"
    raise ValueError(f"model_name {model_name!r} has no validation request; "
                     f"allowed: deepdream, style_transfer, {FAST_STYLE_PREFIX}<style>")


def _png(image: Any) -> bytes:
    import tensorflow as tf

    return tf.io.encode_png(image).numpy()


def check_photo(name: str, height: int) -> Any:
    """The photo `name` (`sources.photos.photo`) resized to `height` rows, aspect kept."""
    import numpy as np
    import tensorflow as tf

    from sources.photos import photo

    image = photo(name)
    width = round(image.shape[1] * height / image.shape[0])
    resized = tf.image.resize(image, (height, width), antialias=True)
    return tf.cast(tf.round(resized), tf.uint8).numpy().astype(np.uint8)


def build_request(model_name: str, request: Mapping[str, Any]) -> tuple[dict[str, Any], tuple]:
    """(signature inputs as a batch of one, expected output height and width)."""
    import tensorflow as tf

    signature = signature_of(model_name)
    content = check_photo(request["photo"], int(request["photo_height"]))
    height, width = content.shape[:2]
    inputs: dict[str, Any] = {"image" if signature != "transfer" else "content":
                              tf.constant([_png(content)])}
    if signature == "dream":
        for name in ("iterations", "octaves"):
            inputs[name] = tf.constant([int(request[name])], tf.int32)
        for name in ("octave_scale", "step", "max_loss"):
            inputs[name] = tf.constant([float(request[name])], tf.float32)
    elif signature == "transfer":
        from sources.photos import painting

        inputs["style"] = tf.constant([_png(painting(request["style"]))])
        inputs["iterations"] = tf.constant([int(request["iterations"])], tf.int32)
        inputs["height"] = tf.constant([int(request["height"])], tf.int32)
        for name in ("content_weight", "style_weight", "tv_weight"):
            inputs[name] = tf.constant([float(request[name])], tf.float32)
        height = int(request["height"])
        width = round(content.shape[1] * height / content.shape[0])
    return inputs, (height, width)


def call_and_check(saved_model_dir: str, model_name: str, request: Mapping[str, Any]
                   ) -> tuple[bool, str, dict[str, Any], bytes | None]:
    """(passed, message, measurements, output PNG) of one call of the served signature."""
    import numpy as np
    import tensorflow as tf

    signature = signature_of(model_name)
    inputs, expected = build_request(model_name, request)
    loaded = tf.saved_model.load(saved_model_dir)
    if signature not in loaded.signatures:
        found = sorted(loaded.signatures)
        return False, f"not blessed: signature {signature!r} missing; found {found}", {}, None
    started = time.monotonic()
    outputs = loaded.signatures[signature](**inputs)
    seconds = time.monotonic() - started
    data = outputs["image"].numpy()[0]
    image = tf.io.decode_png(data).numpy()
    metrics: dict[str, Any] = {"call_seconds": round(seconds, 3),
                               "output_height": int(image.shape[0]),
                               "output_width": int(image.shape[1])}
    problems = []
    if tuple(image.shape) != (*expected, 3):
        problems.append(f"output {image.shape} != expected {(*expected, 3)}")
    if "loss" in outputs:
        loss = float(outputs["loss"].numpy()[0])
        metrics["loss"] = loss
        if not np.isfinite(loss):
            problems.append(f"loss {loss} is not finite")
    if image.std() == 0:
        problems.append("output is a constant image")
    what = f"{signature} answered a {expected[0]}x{expected[1]} PNG in {seconds:.1f} s"
    if problems:
        return False, f"not blessed: {signature}: " + "; ".join(problems), metrics, data
    return True, f"blessed: {what}", metrics, data


@tfx.dsl.components.component
def ValidateSignature(  # noqa: N802 (TFX component names are classes)
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    model_name: tfx.dsl.components.Parameter[str],
    request: tfx.dsl.components.Parameter[str],
) -> None:
    """Blesses `model` when its serving signature answers `request` (JSON: `photo`,
    `photo_height` and the signature's controls) with a PNG of the expected size."""
    saved_model_dir = path_utils.serving_model_path(model.uri)
    passed, message, metrics, data = call_and_check(saved_model_dir, model_name,
                                                    json.loads(request))
    os.makedirs(blessing.uri, exist_ok=True)
    if data is not None:
        with open(os.path.join(blessing.uri, SAMPLE_FILE), "wb") as f:
            f.write(data)
    with open(os.path.join(blessing.uri, "BLESSED" if passed else "NOT_BLESSED"), "w") as f:
        f.write(message + "\n")
    set_properties(blessing, {
        **metrics, BLESSED: passed, CURRENT_MODEL_ID: model.id, "current_model": model.uri,
        BLESSING_MESSAGE: message, "model_name": model_name,
    })
    print(f"  {message}", flush=True)
