"""The name an upload is shown and downloaded under: chosen and cleaned. Pure.

``wx.uploadFile`` cannot set the multipart ``filename``: it is the basename of
the local temporary path (``tmp_3f….pdf``), so clients send the file's real name
in a ``name`` form field. :func:`choose_name` takes that field first, else the
file part's ``filename`` (``filename*=UTF-8''…`` preferred, RFC 5987), each
through :func:`clean_name`; with neither the upload has no name (as before) and
is downloaded as :func:`download_name`: ``file`` plus the sniffed type's
extension.

:func:`clean_name` keeps the last path component only (``../../etc/passwd`` ->
``passwd``, ``C:\\Users\\a\\b.pdf`` -> ``b.pdf``), drops control characters, line
and paragraph separators, bidirectional controls (an RTL override turning
``gpj.exe`` into what reads as ``exe.jpg``) and byte-order marks, normalises to
NFC, and cuts it to :data:`MAX_CHARS` characters and :data:`MAX_BYTES` UTF-8
bytes (keeping a short extension). CJK and every other script stay as they are.
"""

from __future__ import annotations

import re
import unicodedata

#: the longest name in characters
MAX_CHARS = 255
#: the longest name in UTF-8 bytes (what a file system allows)
MAX_BYTES = 255
#: the longest extension kept when a long name is cut
MAX_EXT = 16
#: the bidirectional controls: embeddings, overrides, isolates, marks
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_DROPPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_SEPARATORS = re.compile(r"[/\\]")
#: the extension of each type chatd sniffs (:mod:`chatd.media.sniff`)
EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
    "video/mp4": ".mp4",
}


def _kept(c: str) -> bool:
    return c not in _BIDI and c != "\ufeff" and unicodedata.category(c) not in _DROPPED_CATEGORIES


def _cut(name: str) -> str:
    """*name* within :data:`MAX_CHARS` characters and :data:`MAX_BYTES` bytes."""
    if len(name) <= MAX_CHARS and len(name.encode("utf-8")) <= MAX_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not stem or len(ext) > MAX_EXT:
        stem, ext = name, ""
    else:
        ext = dot + ext
    chars, room = MAX_CHARS - len(ext), MAX_BYTES - len(ext.encode("utf-8"))
    out = []
    for c in stem:
        size = len(c.encode("utf-8"))
        if len(out) >= chars or size > room:
            break
        out.append(c)
        room -= size
    return "".join(out).rstrip() + ext


def clean_name(name: str | None) -> str | None:
    """The uploaded file's name as shown (see the module docstring), or None."""
    if not name:
        return None
    name = unicodedata.normalize("NFC", name)
    name = _SEPARATORS.split(name)[-1]
    name = "".join(c for c in name if _kept(c)).strip()
    if not name.strip("."):  # "", ".", "..": no name
        return None
    return _cut(name) or None


def choose_name(field: str | None, filename: str | None) -> str | None:
    """The name of an upload: its ``name`` form field, else its part's filename."""
    return clean_name(field) or clean_name(filename)


def download_name(name: str | None, mime: str) -> str:
    """The name an upload is downloaded as: its name, else ``file`` + its type's extension."""
    return name or "file" + EXTENSIONS.get(mime, "")
