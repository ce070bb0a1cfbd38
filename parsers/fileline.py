"""A filter matched straight against classic syslog file lines: one regex per line.

Reading a log file, most of the cost per candidate line was parsing the line and then
matching its message. `FileLineMatcher` embeds the filter's failregex alternatives behind
the file-line grammar of `parsers.syslog` (header, then one of the filter's tags), so a
failure costs a single regex match. The verdicts are exactly those of `Filter.examine_line`
(a test holds them to that): the header and the part after the tag are atomic groups, so
matching the message can never make them split the line differently, and anything unusual
falls back to that slow path.
"""

from __future__ import annotations

import re

from parsers.filter import MISS, OTHER, Filter, Verdict
from parsers.syslog import FILE_LINE_AFTER_TAG, FILE_LINE_HEAD, FILE_LINE_TAG_CHAR

__all__ = ["OTHER", "FileLineMatcher"]


class FileLineMatcher:
    """Verdicts of one filter on classic file lines."""

    def __init__(self, filter: Filter) -> None:
        self.filter = filter
        tags = sorted(filter.syslog, key=len, reverse=True)
        alternatives = filter.failregex_pattern
        if tags and alternatives:
            # A tag is whole when the next character cannot continue it.
            head = (f"(?a:(?>{FILE_LINE_HEAD})(?:{'|'.join(map(re.escape, tags))})"
                    f"(?!{FILE_LINE_TAG_CHAR})(?>{FILE_LINE_AFTER_TAG}))")
            self._head = re.compile(head)
            self._line = re.compile(f"{head}(?P<_m>)(?:{alternatives})")
            self._alternatives = {self._line.groupindex[f"_{i}"]: alternative
                                  for i, alternative in enumerate(filter.failregex_alternatives)}
        else:
            self._head = self._line = None

    def verdict(self, line: str, captures: bool = True) -> Verdict:
        """The verdict on a line ("error" with the reason as its detail)."""
        text = line.rstrip("\r\n")
        if self._line is not None and "\x00" not in text:
            m = self._line.match(text)
            if m is not None:
                return self.filter.verdict_of(m, self._alternatives[m.lastindex], text, m.end("_m"), captures)
            head = self._head.match(text)
            if head is not None and not text.startswith("message repeated ", head.end()):
                return MISS
        # Anything unusual: the filter's own reading of the line (a syslog line's date decides nothing).
        return self.filter.examine_line(line, 0.0, captures)
