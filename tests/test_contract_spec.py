"""The contract types: exports are checked against them at save time, ranges read like the
in-graph errors, and the sidecar round-trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import session_path
import tensorflow as tf

import contracts
from contracts import gan
from models import image_exports, saved_model


def test_every_contract_is_well_formed():
    for name, contract in contracts.CONTRACTS.items():
        assert contract.model == name and contract.signatures
        keys = contract.signature_keys()
        assert len(keys) == len(set(keys)), name
        for signature in contract.signatures:
            for tensor in signature.outputs:
                # Binary outputs end in `_bytes` so TF Serving's REST API base64-encodes them.
                assert (
                    tensor.dtype != "string"
                    or tensor.is_bytes
                    or tensor.name in {"text", "continuation", "word"}
                ), (name, signature.name, tensor.name)
            for tensor in signature.inputs:
                if tensor.default is not None:
                    tensor.check_value(tensor.default, _numeric(contract.limits))


def _numeric(limits):
    """Limits fixed by the trained model (None in the contract) as large numbers."""
    return {key: 10**9 if value is None else value for key, value in limits.items()}


def test_ranges_read_like_the_graph_checks():
    generate = contracts.text_lm.GENERATE
    limits = {"max_temperature": 10.0, "max_new_tokens": 50, "vocab_size": 500}
    assert generate.input("temperature").range_text(limits) == "[0, 10]"
    assert generate.input("top_p").range_text(limits) == "(0, 1]"
    edit = contracts.vae.EDIT.input("strength")
    assert edit.bounds({"max_strength": 4.0}) == (-4.0, 4.0)
    with pytest.raises(ValueError, match=r"temperature must be in \[0, 10\]; got 11"):
        generate.input("temperature").check_value(11, limits)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]; got 0"):
        generate.input("top_p").check_value(0, limits)


def test_contract_for_names_the_allowed_models():
    assert contracts.contract_for("fast_style_starry_night") is contracts.fast_style.CONTRACT
    with pytest.raises(KeyError, match="allowed: .*text_lm"):
        contracts.contract_for("bert")


def _generator() -> keras.Model:
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(2 * 2 * 1, activation="sigmoid"),
         keras.layers.Reshape((2, 2, 1))]
    )  # fmt: skip


def test_an_export_that_breaks_its_contract_is_not_written(tmp_path):
    module = image_exports.GANServing(_generator())
    signatures = module.signatures()
    renamed = tf.function(
        lambda seed: {
            "images": module.generate(seed)["images"],
            "png": tf.fill(tf.shape(seed), ""),
        },
        input_signature=[tf.TensorSpec([None], tf.int64, name="seed")],
    )
    with pytest.raises(ValueError, match=r"generate outputs: missing \['png_bytes'\]"):
        saved_model.save(
            module, tmp_path, {**signatures, "generate": renamed},
            contract=gan.CONTRACT, limits=gan.LIMITS,
        )  # fmt: skip
    assert not (tmp_path / "saved_model.pb").exists()
    with pytest.raises(ValueError, match="signature 'decode' is missing"):
        saved_model.save(
            module, tmp_path, {"generate": module.generate, "serving_default": module.generate},
            contract=gan.CONTRACT, limits=gan.LIMITS,
        )  # fmt: skip


def test_a_keras_export_runs_on_the_session_path_and_writes_its_sidecar(tmp_path):
    generator = _generator()
    sidecar = image_exports.export_gan(generator, tmp_path)
    assert contracts.read_sidecar(tmp_path) == sidecar
    assert sidecar["signatures"] == ["decode", "generate", "serving_default"]
    assert sidecar["info"] == {"latent_dim": 4, "image_shape": [2, 2, 1]}
    z = tf.random.stateless_normal([3, 4], seed=[1, 2])
    served = session_path.signatures(tmp_path)["decode"](z=z)
    expected = np.round(generator(z).numpy() * 255.0)
    assert served["images"].dtype == tf.uint8
    assert np.abs(served["images"].numpy().astype(float) - expected).max() <= 1
