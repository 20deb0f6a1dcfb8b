"""The local word filter: the operator's list of forbidden words (``--word-list``).

Every chatd.v1 ``send``, ``dm`` and ``edit`` text (anonymous and token users alike;
not relay mode's verbatim echo, not the operator's HTTP API) is matched against the
list before anything else looks at it (before WeChat's content check and before it
is stored):

* ``--word-filter mask`` (default): each matched word's characters become ``*``;
  the masked text is what is stored and delivered.
* ``--word-filter block``: the sender gets ``error content_blocked``; nothing is
  stored or delivered.

Matching is substring matching (Chinese has no spaces between words) with an
Aho–Corasick automaton (``pyahocorasick``): one pass over the text whatever the
size of the list. Text and words are compared folded: NFKC (full-width ``ＡＢＣ``
and ``１２３`` are ``ABC``, ``123``) and case-folded, with format characters
(zero-width spaces and joiners, U+200B–U+200F, U+2060, U+FEFF) skipped, so
``b\\u200bad`` matches ``bad``. Masking maps the matches back to the original
characters.

The file is UTF-8, one word per line; blank lines and lines starting with ``#``
are ignored. It is read at start (an unreadable file stops chatd) and again on
every SIGHUP (a file that cannot be read then is logged and the old list kept).
"""

from __future__ import annotations

import functools
import unicodedata

import ahocorasick
from twisted.logger import Logger

from chatd import errors

#: the largest word list read, in bytes (a list of 100,000 words is far smaller)
MAX_FILE_BYTES = 16 << 20


@functools.lru_cache(maxsize=65536)
def _fold_char(c: str) -> str:
    """One character folded: "" for a format character, else NFKC and case-folded."""
    if unicodedata.category(c) == "Cf":
        return ""
    return unicodedata.normalize("NFKC", c).casefold()


def _fold(text: str) -> tuple[str, range | list[int]]:
    """*text* folded for matching, and for each folded character the index of the
    original character it came from (ASCII text: lower-cased, the same indexes)."""
    if text.isascii():
        return text.lower(), range(len(text))
    out: list[str] = []
    origin: list[int] = []
    for i, c in enumerate(text):
        f = _fold_char(c)
        if len(f) == 1:
            out.append(f)
            origin.append(i)
        else:
            out.extend(f)
            origin.extend([i] * len(f))
    return "".join(out), origin


class WordList:
    """A compiled, immutable list of forbidden words."""

    def __init__(self, words=()):
        folded = {_fold(w.strip())[0] for w in words}
        folded.discard("")
        self.size = len(folded)
        self._automaton = None
        if folded:
            automaton = ahocorasick.Automaton()
            for word in folded:
                automaton.add_word(word, len(word))
            automaton.make_automaton()
            self._automaton = automaton

    @classmethod
    def read(cls, path: str) -> WordList:
        """The list in the file *path*; OSError or ValueError (not UTF-8, too large)."""
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ValueError(f"{path} is over {MAX_FILE_BYTES} bytes")
        lines = raw.decode("utf-8").splitlines()
        return cls(line for line in lines if line.strip() and not line.lstrip().startswith("#"))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The ``(start, end)`` (end exclusive) of every match in *text*, in order."""
        if self._automaton is None or not text:
            return []
        folded, origin = _fold(text)
        return [
            (origin[end - length + 1], origin[end] + 1)
            for end, length in self._automaton.iter(folded)
        ]


def mask(text: str, spans) -> str:
    """*text* with the characters of every span replaced by ``*``."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = "*" * (end - start)
    return "".join(chars)


class WordFilter:
    """The word filter of one chat (see the module docstring)."""

    log = Logger()

    def __init__(self, settings):
        #: the chat's Settings: word_filter ("mask" or "block"), read for every text
        self.settings = settings
        self.words = WordList()
        self.path = None
        #: texts masked, texts refused
        self.masked = 0
        self.blocked = 0

    def load(self, path: str | None) -> None:
        """Use the list in *path* (None: no list); OSError / ValueError leave the old one."""
        self.words = WordList() if not path else WordList.read(path)
        self.path = path or None
        if path:
            self.log.info("word list {path}: {n} words", path=path, n=self.words.size)

    def reload(self, path: str | None) -> None:
        """Re-read the list (SIGHUP); a file that cannot be read keeps the old list."""
        try:
            self.load(path)
        except (OSError, ValueError) as e:
            self.log.error("word list {path} not reloaded, the old one is kept: {e}", path=path,
                           e=e)  # fmt: skip

    def apply(self, text: str, ref=None) -> str:
        """The text to store for *text*: masked, or refused with
        :class:`chatd.errors.ContentBlocked` (``--word-filter block``)."""
        spans = self.words.spans(text)
        if not spans:
            return text
        if self.settings.word_filter == "block":
            self.blocked += 1
            raise errors.ContentBlocked("the text holds a word this server does not allow", ref)
        self.masked += 1
        return mask(text, spans)
