"""Review sources read one document at a time, for a Beam pipeline that streams them.

A source is first listed as document *names* (a file's path relative to the folder, or the
offline corpus's `rotten_tomatoes:<row>` / `clothing:<row>` origins), in the order of
`sources.reviews.reviews`; each name is then read on its own by `read_document`. A name is the
document's `origin`, so a kept document can be read again after deduplication instead of its
text being carried through a shuffle. The offline corpus is one packaged file of fixed size: a
worker loads it once and looks names up in it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from pathlib import Path

from sources.reviews import (
    _BR_TAG,
    ACLIMDB_LABELS,
    ACLIMDB_SPLITS,
    Review,
    _read_text,
    is_aclimdb,
    offline_reviews,
    reviews,
)

OFFLINE = "offline"


def _all_names(source: str) -> Iterator[str]:
    if source == OFFLINE:
        yield from _offline_corpus()
        return
    root = Path(source)
    if not _is_aclimdb(source):
        yield from (str(p.relative_to(root)) for p in sorted(root.glob("**/*.txt")) if p.is_file())
        return
    for split, label in itertools.product(ACLIMDB_SPLITS, ACLIMDB_LABELS):
        folder = root / split / label
        if folder.is_dir():
            yield from (str(p.relative_to(root)) for p in sorted(folder.glob("*.txt")))


def document_names(source: str, max_documents: int = 0) -> Iterator[str]:
    """The names of the first `max_documents` documents of `source` (all when 0).

    Raises the ValueError of `sources.reviews.reviews` for a source that is neither `offline`
    nor an existing folder.
    """
    reviews(source)  # checks the source; its documents are not read
    names = _all_names(source)
    return itertools.islice(names, max_documents) if max_documents else names


def read_document(name: str, source: str) -> Review:
    """The document `name` of `source` (text None when the file is not valid UTF-8)."""
    if source == OFFLINE:
        return _offline_corpus()[name]
    root = Path(source)
    path = root / name
    if not _is_aclimdb(source):
        return _read_text(path, root, None)
    label = path.parent.name
    review = _read_text(path, root, label)
    if review.text is None:
        return review
    return Review(_BR_TAG.sub(" ", review.text), review.origin, label)


@functools.lru_cache(maxsize=8)
def _is_aclimdb(source: str) -> bool:
    return is_aclimdb(source)


@functools.lru_cache(maxsize=1)
def _offline_corpus() -> dict[str, Review]:
    """The offline corpus by origin, in corpus order (loaded once per worker process)."""
    return {review.origin: review for review in offline_reviews()}
