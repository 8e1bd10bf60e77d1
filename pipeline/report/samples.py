"""Samples of each live version: asked of a model server, or the ones the pipeline wrote.

Without a server the report shows what the pipeline already wrote for the version: the
ServingValidator's answer to each signature (`<InfraBlessing>/samples/<key>.png`), and from
the Trainer's `model_run` folder the latest text and image summaries of its TensorBoard logs
(text at each sampling temperature, the VAE latent grid) and the latest PNG of each folder (the
GAN's `samples/epoch_NNN.png`). With a server, `ask_server` generates fresh ones with the
client library, cheap settings below.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from pipeline import status as st

# What the report asks a server for: kept small so `make demo`'s report takes seconds.
PROMPT = "this movie"
TEMPERATURES = (0.2, 0.5, 0.7, 1.0, 1.5)  # the chapter's five sampling temperatures
MAX_TOKENS = 15  # within every profile's export limit (smoke exports allow 15)
VAE_GRID = {"n": 15, "extent": 2.0}
GAN_SEEDS = tuple(range(16))
DREAM = {"iterations": 5, "octaves": 2}
STYLE = {"iterations": 10, "height": 128}
PHOTO, PAINTING = "chelsea", "starry_night"
DREAM_PHOTO = "coffee"
DREAM_SIZE = (240, 160)  # width, height: under every export's DeepDream pixel limit
SERVER_TIMEOUT = 120.0  # seconds per generation: a dream or a transfer takes seconds on a CPU


@dataclasses.dataclass(frozen=True)
class Sample:
    """One sample: a PNG (bytes) or a text, with what it shows."""

    model: str
    version: int
    title: str
    png: bytes | None = None
    text: str = ""
    where: str = ""  # the file or server it came from


def live_versions(versions: list[st.VersionStatus]) -> list[st.VersionStatus]:
    """The versions that answer: AVAILABLE on the server when one was asked, else the
    labelled versions on disk and each model's newest version on disk."""
    if any(v.server_state for v in versions):
        return [v for v in versions if v.live]
    chosen = [v for v in versions if v.on_disk and not v.partial and v.labels]
    for model in sorted({v.model for v in versions}):
        newest = [v for v in versions if v.model == model and v.on_disk and not v.partial]
        if newest and newest[0] not in chosen:
            chosen.append(newest[0])  # versions come newest first
    return chosen


# -- what the pipeline wrote ----------------------------------------------------------------


def _summaries(folder: str) -> dict[tuple[str, str], tuple[int, str, Any]]:
    """{(subfolder, tag): (step, plugin, value)} of the latest text and image summaries."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    latest: dict[tuple[str, str], tuple[int, str, Any]] = {}
    for directory, _, files in tf.io.gfile.walk(folder):
        for name in sorted(f for f in files if "tfevents" in f):
            where = os.path.relpath(directory, folder) if directory != folder else ""
            for record in tf.data.TFRecordDataset(os.path.join(directory, name)):
                event = event_pb2.Event.FromString(record.numpy())
                for value in event.summary.value:
                    plugin = value.metadata.plugin_data.plugin_name
                    if plugin not in ("text", "images") or not value.tensor.string_val:
                        continue
                    key = (where, value.tag)
                    if key not in latest or event.step >= latest[key][0]:
                        latest[key] = (event.step, plugin, list(value.tensor.string_val))
    return latest


def _last_pngs(folder: str) -> list[str]:
    """The last PNG (by name) of each folder under ``folder``."""
    import tensorflow as tf

    found = []
    for directory, _, files in tf.io.gfile.walk(folder):
        pngs = sorted(f for f in files if f.endswith(".png"))
        if pngs:
            found.append(os.path.join(directory, pngs[-1]))
    return found


def _read(path: str) -> bytes:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as handle:
        return handle.read()


def stored(version: st.VersionStatus) -> list[Sample]:
    """The samples the pipeline wrote for ``version`` (none when its folders are gone)."""
    import tensorflow as tf

    found = []
    model, number = version.model, version.version
    if version.tensorboard and tf.io.gfile.isdir(version.tensorboard):
        for (where, tag), (step, plugin, values) in sorted(_summaries(version.tensorboard).items()):
            title = f"training, {os.path.join(where, tag).strip('./')} (step {step})"
            if plugin == "text":
                text = values[0].decode("utf-8", "replace")
                found.append(Sample(model, number, title, text=text, where=version.tensorboard))
            else:  # images: width, height, then one encoded image per row
                found.append(Sample(model, number, title, png=values[2],
                                    where=version.tensorboard))
        for path in _last_pngs(version.tensorboard):
            title = f"training, {os.path.relpath(path, version.tensorboard)}"
            found.append(Sample(model, number, title, png=_read(path), where=path))
    if version.samples and tf.io.gfile.isdir(version.samples):
        for name in sorted(tf.io.gfile.listdir(version.samples)):
            if name.endswith(".png"):
                path = os.path.join(version.samples, name)
                title = f"serving validation, signature {name.removesuffix('.png')}"
                found.append(Sample(model, number, title, png=_read(path), where=path))
    return found


# -- asked of a server ----------------------------------------------------------------------


def _ask(client: Any, model: str) -> list[Sample]:
    from client.images import grid
    from contracts import deepdream, fast_style, gan, style_transfer, text_lm, vae
    from sources import photos

    if model == text_lm.MODEL:
        found = []
        for temperature in TEMPERATURES:
            (generation,) = client.generate_text([PROMPT], temperature=temperature,
                                                 max_tokens=MAX_TOKENS, seed=[1])
            found.append(Sample(model, generation.version, f"temperature {temperature:g}",
                                text=generation.text))
        return found
    if model == vae.MODEL:
        image = client.vae_latent_grid(**VAE_GRID)
        return [Sample(model, image.version, f"latent grid {VAE_GRID}", png=image.png)]
    if model == gan.MODEL:
        images = client.gan_generate(list(GAN_SEEDS))
        return [Sample(model, images[0].version, f"seeds {GAN_SEEDS[0]}..{GAN_SEEDS[-1]}",
                       png=grid(images, 4))]
    if model == deepdream.MODEL:
        import numpy as np
        from PIL import Image

        photo = Image.fromarray(photos.photo(DREAM_PHOTO)).resize(DREAM_SIZE)
        image = client.dream(np.asarray(photo), **DREAM)
        return [Sample(model, image.version, f"dream of {DREAM_PHOTO} {DREAM}", png=image.png)]
    if model == style_transfer.MODEL:
        result = client.style_transfer(photos.photo(PHOTO), photos.painting(PAINTING), **STYLE)
        return [Sample(model, result.image.version, f"{PHOTO} as {PAINTING} {STYLE}",
                       png=result.image.png)]
    if model.startswith(fast_style.PREFIX):
        image = client.fast_style(photos.photo(PHOTO), model.removeprefix(fast_style.PREFIX))
        return [Sample(model, image.version, f"{PHOTO}", png=image.png)]
    return []


def ask_server(live: dict[str, int], server: str, **client_options: Any) -> list[Sample]:
    """Fresh samples of each model of ``live`` ({model: its live version}) from ``server``;
    a refused request becomes a text sample saying why."""
    from client import ModelServerClient, ModelServerError

    found = []
    with ModelServerClient(server, **client_options) as client:
        for model, version in sorted(live.items()):
            try:
                samples = _ask(client, model)
            except (ModelServerError, OSError, ValueError) as error:
                samples = [Sample(model, version, "the server did not answer", text=str(error))]
            found += [dataclasses.replace(s, where=server) for s in samples]
    return found


def collect(versions: list[st.VersionStatus], server: str | None = None,
            **client_options: Any) -> list[Sample]:
    """Samples of every live version: asked of ``server``, or stored by the pipeline."""
    live = live_versions(versions)
    if server is not None and live:
        return ask_server({v.model: v.version for v in reversed(live)}, server, **client_options)
    return [sample for version in live for sample in stored(version)]
