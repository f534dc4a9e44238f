"""Text analysis for full-text search: one tokeniser for every store and benchmark.

Chunks are analysed here, once, and stores index the resulting terms as they
are (whitespace-separated). That way LanceDB, PostgreSQL and the BM25 reference
in the benchmark all rank the very same tokens.

Example::

    >>> analyze("Returns are accepted within 30 days.")
    ['return', 'accept', 'within', '30', 'day']
"""

from __future__ import annotations

import re
from functools import lru_cache

import Stemmer

__all__ = ["STOPWORDS", "analyze"]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

# The usual English function words (the list Lucene and Snowball share, slightly extended).
STOPWORDS = frozenset(
    """a an and are as at be been but by for from had has have he her his i if in into is it
    its me my no not of on or our she so such than that the their them then there these they
    this those to was we were what when where which while who will with would you your""".split()
)


@lru_cache(maxsize=1)
def _stemmer():
    return Stemmer.Stemmer("english")


def analyze(text: str) -> list[str]:
    """Lower-case words and numbers, English stop words removed, Snowball-stemmed."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) < 64]
    return _stemmer().stemWords(words)
