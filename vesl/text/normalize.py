"""Caption cleaning with an index map back to the caption as stored.

Web alt-text carries HTML entities (``&amp;``, ``&#39;``), stray tags (``<br/>``) and URLs; parsers
should see ``&``, ``'``, and nothing for tags and URLs, while phrase spans must still index the
stored caption. ``clean_caption`` returns the cleaned text with, for every cleaned character, the
start and end of the caption characters it came from.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,200}>")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_PATTERN = re.compile(f"{_ENTITY.pattern}|{_TAG.pattern}|{_URL.pattern}", re.IGNORECASE)


@dataclass(frozen=True)
class CleanText:
    text: str
    starts: list[int] | None  # caption index where cleaned char i starts; None: identity
    ends: list[int] | None  # caption index where cleaned char i ends (exclusive)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Cleaned [start, end) -> caption [start, end)."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def clean_caption(caption: str) -> CleanText:
    if "&" not in caption and "<" not in caption and "://" not in caption and "www." not in caption.lower():
        return CleanText(caption, None, None)
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    position = 0
    for match in _PATTERN.finditer(caption):
        for i in range(position, match.start()):
            pieces.append(caption[i])
            starts.append(i)
            ends.append(i + 1)
        token = match.group(0)
        replacement = html.unescape(token) if token.startswith("&") else " "
        if replacement == token:  # an unknown entity stays as written
            replacement_chars = [(ch, match.start() + k, match.start() + k + 1) for k, ch in enumerate(token)]
        else:
            replacement_chars = [(ch, match.start(), match.end()) for ch in replacement]
        for ch, s, e in replacement_chars:
            pieces.append(ch)
            starts.append(s)
            ends.append(e)
        position = match.end()
    for i in range(position, len(caption)):
        pieces.append(caption[i])
        starts.append(i)
        ends.append(i + 1)
    return CleanText("".join(pieces), starts, ends)
