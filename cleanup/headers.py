"""Streaming header processing for cleanup (sans-IO).

NAME
    cleanup.headers -- find, bound and complete a message's header section

SYNOPSIS
    hp = HeaderProcessor(header_size_limit=102400)
    out = hp.feed(block)            # bytes to store, in order
    out += hp.finish(missing_headers_callback)

DESCRIPTION
    Message content arrives as CRLF lines (already dot-unstuffed), cut into
    blocks at arbitrary places. The processor walks the header section line
    by line (headers are small), notes the headers cleanup cares about
    (Message-ID, Date, From, To, Cc, Bcc, Received, Delivered-To, Resent-*),
    bounds every logical header to `header_size_limit` bytes (the excess is
    discarded, as Postfix's cleanup does), and, at the end of the header
    section, lets the caller append missing headers (Postfix appends them
    after the existing ones). The body is then passed through untouched with
    no per-line work: the hot path is a single `bytes` return.

    The header section ends at the first empty line, or at the first line
    that is not a header line and not a continuation (Postfix treats such a
    line as the start of the body). A message without any body separator is
    all headers; `finish()` flushes it.

    `hops` counts Received: and Delivered-To: headers (Postfix's
    hopcount_limit counts both).

    `rewrite`, when set (cleanup.rewrite.HeaderRewriter), is called as
    rewrite(lower-case name, text) with each complete logical header when
    it is flushed and returns the header to store (address rewriting);
    it costs the body nothing.
"""

from __future__ import annotations

import re
from typing import Callable

# RFC 5322 field name: printable ASCII except colon, then a colon. Postfix
# also accepts white space before the colon ("Subject :"), as does this.
_HEADER_RE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")

TRACKED = (b"message-id", b"date", b"from", b"to", b"cc", b"bcc", b"received",
           b"delivered-to", b"resent-message-id", b"resent-date", b"resent-from",
           b"sender", b"return-path")


class HeaderProcessor:
    """Processes the header section of one message; one object per message."""

    def __init__(self, header_size_limit: int) -> None:
        self.header_size_limit = header_size_limit
        self.in_headers = True
        self.pending = b""          # an incomplete line carried between blocks
        self.current: list[bytes] = []   # lines of the logical header being built
        self.current_size = 0
        self.truncated = False
        self.seen: dict[bytes, int] = {}
        self.headers: list[tuple[bytes, bytes]] = []  # (lower name, full text) of tracked headers
        self.hops = 0
        self.header_bytes = 0
        # Held only until the end of the header section: the callback is
        # usually a method of the object that owns this processor, and a
        # reference kept after that would make every message a reference
        # cycle (garbage left to the collector, docs/performance.md item 58).
        self._complete_cb: Callable[[], bytes] | None = None
        self._appended = False
        self.rewrite: Callable[[bytes, bytes], bytes] | None = None

    # -- feeding -------------------------------------------------------------

    def feed(self, data: bytes, complete: Callable[[], bytes] | None = None) -> bytes:
        """Take the next block; return the bytes to store for it.

        `complete` is called once, at the end of the header section, and
        returns the headers to append (CRLF lines), or b"".
        """
        if not self.in_headers:
            return data
        if complete is not None:
            self._complete_cb = complete
        buf = self.pending + data if self.pending else data
        self.pending = b""
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                self.pending = buf[pos:]
                break
            line = buf[pos:nl + 1]
            pos = nl + 1
            if not self._header_line(line, out):
                # End of headers: this line and the rest are body.
                out.append(line)
                out.append(buf[pos:])
                break
        return b"".join(out)

    def finish(self, complete: Callable[[], bytes] | None = None) -> bytes:
        """End of content: flush a header still being built, append missing headers."""
        out: list[bytes] = []
        if self.in_headers:
            if complete is not None:
                self._complete_cb = complete
            tail = self.pending
            self.pending = b""
            if tail:
                # An unterminated last line: keep it, terminated, so that
                # appended headers do not glue onto it.
                if _HEADER_RE.match(tail) or (tail[:1] in (b" ", b"\t") and self.current):
                    self._header_line(tail + b"\r\n", out)
                else:
                    self._end_headers(out)
                    out.append(tail)
                    return b"".join(out)
            self._end_headers(out)
        elif self.pending:
            out.append(self.pending)
            self.pending = b""
        return b"".join(out)

    # -- internals -------------------------------------------------------------

    def _header_line(self, line: bytes, out: list[bytes]) -> bool:
        """Handle one complete header-section line; False at end of headers."""
        first = line[:1]
        if (first == b" " or first == b"\t") and self.current:
            self._add_to_current(line)
            return True
        if _HEADER_RE.match(line):
            if self.current:
                self._flush_current(out)
            self._add_to_current(line)
            return True
        self._end_headers(out)
        return False

    def _add_to_current(self, line: bytes) -> None:
        if self.truncated:
            return
        room = self.header_size_limit - self.current_size
        if len(line) > room:
            self.truncated = True
            if self.current:
                return          # the lines past the limit are discarded
            # A first line longer than the limit on its own: its head is
            # the header (the flush terminates it).
            line = line[:room]
        self.current.append(line)
        self.current_size += len(line)

    def _flush_current(self, out: list[bytes]) -> None:
        current = self.current
        if not current:
            return
        text = current[0] if len(current) == 1 else b"".join(current)
        if self.truncated and not text.endswith(b"\n"):
            text += b"\r\n"
        name = text.partition(b":")[0].strip().lower()
        if self.rewrite is not None:
            text = self.rewrite(name, text)
        if name in TRACKED:
            self.seen[name] = self.seen.get(name, 0) + 1
            self.headers.append((name, text))
            if name in (b"received", b"delivered-to"):
                self.hops += 1
        self.header_bytes += len(text)
        out.append(text)
        self.current = []
        self.current_size = 0
        self.truncated = False

    def _end_headers(self, out: list[bytes]) -> None:
        self._flush_current(out)
        self.in_headers = False
        complete, self._complete_cb = self._complete_cb, None
        if not self._appended and complete is not None:
            self._appended = True
            out.append(complete())

    def header_value(self, name: bytes) -> bytes | None:
        """The unfolded value of the first tracked header `name`, if any."""
        for n, text in self.headers:
            if n == name:
                value = text.split(b":", 1)[1]
                return b" ".join(value.split())
        return None
