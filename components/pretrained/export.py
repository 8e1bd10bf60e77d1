"""`ExportPretrainedModel`: DeepDream or Gatys style transfer from ImageNet weights, as a Model.

Neither model trains: the component builds the feature extractor (InceptionV3 for `deepdream`,
VGG19 for `style_transfer`) from the requested weights and writes the SavedModel where a
Trainer writes its own (`<uri>/Format-Serving`), so validation and the standard Pusher treat it
like any trained model. The export limits become custom properties of the Model artifact and
`<uri>/limits.json`.
"""

# No `from __future__ import annotations`: the @component decorator reads real annotations.
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.utils import path_utils

from contracts import contract_for

# Model name -> its one signature, from the serving contract.
SIGNATURES = {
    name: contract_for(name).signatures[0].name for name in ("deepdream", "style_transfer")
}
LIMITS_FILE = "limits.json"


def check_model_name(model_name: str) -> str:
    """`model_name` if it is exportable here; a ValueError naming the allowed names otherwise."""
    if model_name not in SIGNATURES:
        raise ValueError(f"model_name {model_name!r} cannot be exported from ImageNet weights; "
                         f"allowed: {', '.join(SIGNATURES)}")
    return model_name


def _exporter(model_name: str) -> Callable[..., dict[str, Any]]:
    # Imported here: TensorFlow and Keras load only when the component runs.
    from models.deepdream import export_deepdream
    from models.style_transfer import export_style_transfer

    return {"deepdream": export_deepdream, "style_transfer": export_style_transfer}[model_name]


class _FallbackNotices(logging.Handler):
    """Collects the warnings `models.pretrained` logs when it falls back to packaged weights."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _fallback_notices() -> Iterator[_FallbackNotices]:
    handler = _FallbackNotices()
    logger = logging.getLogger("models.pretrained")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def plain(value: Any) -> Any:
    """Limits as JSON values (tuples and Keras' tracked dicts become lists and dicts)."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(item) for item in value]
    return value


def weights_source(requested: str, notices: list[str]) -> str:
    """What the extractor's weights really were, for the artifact and the run summary."""
    if requested == "imagenet" and notices:
        return "packaged (the ImageNet download failed; the offline copy of the same weights)"
    return requested


def export_pretrained(model_name: str, export_dir: str, settings: Mapping[str, Any]
                      ) -> tuple[dict[str, Any], str]:
    """Writes the SavedModel; returns (limits as JSON values, weights source)."""
    check_model_name(model_name)
    settings = dict(settings)
    requested = str(settings.get("weights", "imagenet"))
    with _fallback_notices() as notices:
        limits = _exporter(model_name)(export_dir, **settings)["limits"]
    return plain(limits), weights_source(requested, notices.messages)


@tfx.dsl.components.component
def ExportPretrainedModel(  # noqa: N802 (TFX component names are classes)
    model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    model_name: tfx.dsl.components.Parameter[str],
    settings: tfx.dsl.components.Parameter[str],
) -> None:
    """Exports `model_name` (`deepdream` or `style_transfer`) with `settings` (JSON: the keyword
    arguments of `models.deepdream.export_deepdream` / `models.style_transfer.export_style_transfer`
    without `export_dir`, e.g. weights, max_pixels, max_iterations)."""
    export_dir = path_utils.serving_model_dir(model.uri)
    limits, source = export_pretrained(model_name, export_dir, json.loads(settings))
    with fileio.open(os.path.join(model.uri, LIMITS_FILE), "w") as f:
        json.dump(limits, f, indent=2)
    model.set_string_custom_property("model_name", model_name)
    model.set_string_custom_property("signature", SIGNATURES[model_name])
    model.set_string_custom_property("weights", source)
    model.set_string_custom_property("limits", json.dumps(limits))
    for name, value in limits.items():
        if isinstance(value, int):
            model.set_int_custom_property(f"limit_{name}", value)
        elif isinstance(value, list) and len(value) == 2:
            model.set_string_custom_property(f"limit_{name}", f"{value[0]}..{value[1]}")
    print(f"  exported {model_name} ({SIGNATURES[model_name]}), weights: {source}", flush=True)
