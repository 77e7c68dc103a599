"""Addresses in message headers: find them, rewrite them in place (sans-IO).

NAME
    fulmar.smtp.headeraddr -- RFC 5322 address lists in From:, To: ... headers

SYNOPSIS
    spans = parse_address_list(value)          # value: the text after "Name:"
    span = simple_span(value)                  # the same, for "<a@b.c>" only (else None)
    span.start, span.end                       # the addr-spec's place in value
    span.address                               # internal form ("a b@x" unquoted)
    span.element                               # where its mailbox element starts
    new = rewrite_header(text, mapper)         # text: "Name: value\\r\\n" (bytes)
    new is None: nothing changed (keep the original bytes)
    name = header_name(text)                   # lower-case field name (bytes)
    SENDER_HEADERS, RECIPIENT_HEADERS          # lower-case field names by class
    hs = HeaderStream(rewrite)                 # rewrite(name, text) -> text
    out = hs.feed(block) ...; out += hs.finish()   # a message's content, any cuts

DESCRIPTION
    The value is cut into RFC 5322 tokens: quoted strings (backslash
    escapes), comments (nested), domain literals, the specials
    `< > , : ; @ .`, atoms and white space (folding included).  Top-level
    commas separate mailbox elements; `display name:` ... `;` is a group
    (its name is never an address, `undisclosed-recipients:;` has none);
    an element with `<...>` has its address there (a source route
    `@a,@b:` inside the brackets is kept as it is and not part of the
    address; `<>` has none); otherwise the element's words are the
    address.  An element whose words do not form `local-part[@domain]`
    (dot-separated atoms or quoted strings, then dot-separated atoms or a
    domain literal) is left alone: a malformed header is never "repaired".

    rewrite_header() calls mapper(address) for each address (internal
    form) and gets the new internal-form address, or None / the same
    address for no change.  Only the addr-spec text of a changed address
    is replaced (by its external form, the local part quoted when needed);
    every other byte of the header stays as it was.  When a replacement
    makes its physical line longer than FOLD_LENGTH and the element is not
    the first on that line, a line break is inserted before the white
    space that precedes the element (folding at an existing blank, RFC
    5322 2.2.3), and nowhere else.

    Headers are bytes; they are decoded as UTF-8 with surrogateescape, so
    that 8-bit and malformed bytes round-trip unchanged.

    HeaderStream passes a message's content through and hands each
    complete logical header of its header section to rewrite(); the
    section ends at the first line that is neither a header nor a
    continuation (an empty line normally).  After it, feed() returns its
    block as it is, with no per-line work (the smtp client's
    smtp_generic_maps path).

FAILURES
    None: any input gives a result; input it cannot parse is left as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from fulmar.smtp.address import external_form

#: RFC 5322 2.1.1: lines SHOULD be no longer than 78 characters (without CRLF).
FOLD_LENGTH = 78

# Postfix's header_opts.c: HDR_OPT_SENDER and HDR_OPT_RECIP headers.
SENDER_HEADERS = frozenset({
    b"from", b"sender", b"reply-to", b"return-path", b"errors-to",
    b"resent-from", b"resent-sender", b"resent-reply-to",
})
RECIPIENT_HEADERS = frozenset({
    b"to", b"cc", b"bcc", b"apparently-to", b"resent-to", b"resent-cc", b"resent-bcc",
})

_SPECIALS = '<>,:;@.[]()"'
_WSP = " \t\r\n"

# token kinds
ATOM, QUOTED, COMMENT, LITERAL, SPECIAL, SPACE = "atom", "qs", "comment", "literal", "special", "ws"


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class AddressSpan:
    start: int          # addr-spec text: value[start:end]
    end: int
    address: str        # internal form
    element: int        # start of the mailbox element (after the comma)


def tokenize(value: str) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        start = i
        if c in _WSP:
            while i < n and value[i] in _WSP:
                i += 1
            out.append(Token(SPACE, start, i, value[start:i]))
        elif c == '"':
            i += 1
            while i < n and value[i] != '"':
                i += 2 if value[i] == "\\" else 1
            i = min(i + 1, n)
            out.append(Token(QUOTED, start, i, value[start:i]))
        elif c == "(":
            depth = 0
            while i < n:
                ch = value[i]
                if ch == "\\":
                    i += 2
                    continue
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
            i = min(i, n)
            out.append(Token(COMMENT, start, i, value[start:i]))
        elif c == "[":
            while i < n and value[i] != "]":
                i += 2 if value[i] == "\\" else 1
            i = min(i + 1, n)
            out.append(Token(LITERAL, start, i, value[start:i]))
        elif c in _SPECIALS:
            i += 1
            out.append(Token(SPECIAL, start, i, c))
        else:
            while i < n and value[i] not in _SPECIALS and value[i] not in _WSP:
                i += 1
            out.append(Token(ATOM, start, i, value[start:i]))
    return out


def _unquote(qs: str) -> str | None:
    if len(qs) < 2 or not qs.endswith('"'):
        return None             # unterminated
    body, out, i = qs[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            i += 1
        elif body[i] in "\r\n":     # folding inside a quoted string
            i += 1
            continue
        out.append(body[i])
        i += 1
    return "".join(out)


def _addr_spec(tokens: list[Token]) -> tuple[int, int, str] | None:
    """(start, end, internal form) when `tokens` are local-part[@domain]."""
    words = [t for t in tokens if t.kind not in (SPACE, COMMENT)]
    if not words:
        return None
    local: list[str] = []
    domain: list[str] | None = None
    expect_word = True
    for t in words:
        if domain is None and t.kind == SPECIAL and t.text == "@" and not expect_word:
            domain, expect_word = [], True
            continue
        if expect_word:
            if t.kind == ATOM:
                part = t.text
            elif t.kind == QUOTED and domain is None:
                part = _unquote(t.text)
                if part is None:
                    return None
            elif t.kind == LITERAL and domain is not None and not domain:
                if not t.text.endswith("]"):
                    return None
                part = t.text
            else:
                return None
            (local if domain is None else domain).append(part)
            expect_word = False
        elif t.kind == SPECIAL and t.text == "." and not (domain and domain[-1].startswith("[")):
            (local if domain is None else domain).append(".")
            expect_word = True
        else:
            return None
    if expect_word:
        return None             # ends with "." or "@"
    text = "".join(local) if domain is None else "".join(local) + "@" + "".join(domain)
    return words[0].start, words[-1].end, text


def parse_address_list(value: str) -> list[AddressSpan]:
    """The addresses of an address-list header value, in order."""
    spans: list[AddressSpan] = []
    tokens = tokenize(value)
    elem: list[Token] = []          # tokens of the current element outside <>
    angle: list[Token] | None = None   # tokens inside <> (None: not seen)
    in_angle = False
    broken = False                  # a second "<", or a stray ">": leave it alone
    in_group = False
    elem_start = 0

    def finish() -> None:
        if broken:
            return
        found = _addr_spec(angle) if angle is not None else _addr_spec(elem)
        if found:
            spans.append(AddressSpan(found[0], found[1], found[2], elem_start))

    for t in tokens:
        if in_angle:
            if t.kind == SPECIAL and t.text == ">":
                in_angle = False
            elif t.kind == SPECIAL and t.text == ":":
                angle = []          # end of a source route: it is not the address
            elif t.kind == SPECIAL and t.text == "<":
                broken = True
            else:
                angle.append(t)
            continue
        if t.kind == SPECIAL:
            if t.text == "<":
                if angle is not None:
                    broken = True
                angle, in_angle = [], True
                continue
            if t.text in ",;" or (t.text == ":" and not in_group and _is_phrase(elem) and angle is None):
                if t.text == ":":
                    in_group = True     # "name:" starts a group: the name is no address
                else:
                    finish()
                    if t.text == ";":
                        in_group = False
                elem, angle, broken = [], None, False
                elem_start = t.end
                continue
            if t.text == ">":
                broken = True
                continue
        if angle is not None and t.kind not in (SPACE, COMMENT):
            broken = True           # words after <addr>
        elem.append(t)
    if in_angle:
        broken = True
    finish()
    return spans


def _is_phrase(tokens: list[Token]) -> bool:
    return any(t.kind in (ATOM, QUOTED) for t in tokens) and all(
        t.kind in (ATOM, QUOTED, SPACE, COMMENT) or (t.kind == SPECIAL and t.text == ".")
        for t in tokens)


def header_name(text: bytes) -> bytes:
    return text.split(b":", 1)[0].strip().lower()


# The common header "From: <user@example.com>" (or without the brackets):
# one ASCII dot-atom addr-spec on one line, found without tokenizing (the
# tokenizer cost ~10 us per header, cleanup's largest per-message parse).
# It gives what parse_address_list would (a test compares the two).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = _ATEXT + r"(?:\." + _ATEXT + r")*"
_ADDR_SPEC = _DOT_ATOM + "@" + _DOT_ATOM
_SIMPLE_ONE = re.compile(r"[ \t]*(?:<(%s)>|(%s))[ \t]*(?:\r?\n)?\Z" % (_ADDR_SPEC, _ADDR_SPEC))


def simple_span(value: str) -> AddressSpan | None:
    """The one address of a value of that simple form, else None."""
    m = _SIMPLE_ONE.match(value)
    if m is None:
        return None
    g = 1 if m.start(1) >= 0 else 2
    return AddressSpan(m.start(g), m.end(g), m.group(g), 0)


def rewrite_header(text: bytes, mapper: Callable[[str], str | None]) -> bytes | None:
    """Rewrite the addresses of one logical header; None when nothing changed."""
    colon = text.find(b":")
    if colon < 0:
        return None
    value = text[colon + 1:].decode("utf-8", "surrogateescape")
    changes: list[tuple[AddressSpan, str]] = []
    one = simple_span(value)
    for span in (one,) if one is not None else parse_address_list(value):
        new = mapper(span.address)
        if new and new != span.address:
            changes.append((span, external_form(new)))
    if not changes:
        return None
    head = text[:colon + 1].decode("utf-8", "surrogateescape")
    out = value
    for span, new in reversed(changes):
        out = out[:span.start] + new + out[span.end:]
        out = _fold_before(head, out, span.element, span.start + len(new))
    return (head + out).encode("utf-8", "surrogateescape")


def _fold_before(head: str, value: str, element: int, end: int) -> str:
    """Break the line before `element` when the rewritten line is too long."""
    line_start = value.rfind("\n", 0, end) + 1
    line_end = value.find("\r\n", end)
    if line_end < 0:
        line_end = len(value)
    length = line_end - line_start + (len(head) if line_start == 0 else 0)
    if length <= FOLD_LENGTH or element <= line_start:
        return value
    ws = element
    while ws < end and value[ws] in " \t":
        ws += 1
    if ws == element or element - 1 < 0:
        return value                # no blank to fold at
    return value[:element] + "\r\n" + value[element:]


# A header line: RFC 5322 field name, optional blanks, colon (as cleanup.headers).
_HEADER_RE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")


class HeaderStream:
    """Streams content, giving each header of the header section to `rewrite`."""

    def __init__(self, rewrite: Callable[[bytes, bytes], bytes]) -> None:
        self.rewrite = rewrite
        self.done = False
        self._pending = b""
        self._current: list[bytes] = []

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        buf = self._pending + data if self._pending else data
        self._pending = b""
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while pos < end:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                self._pending = buf[pos:]
                break
            line = buf[pos:nl + 1]
            pos = nl + 1
            if line[:1] in (b" ", b"\t") and self._current:
                self._current.append(line)
            elif _HEADER_RE.match(line):
                self._flush(out)
                self._current.append(line)
            else:
                self._flush(out)
                self.done = True
                out.append(buf[nl + 1 - len(line):])
                break
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if not self.done:
            tail, self._pending = self._pending, b""
            if tail and (tail[:1] in (b" ", b"\t") and self._current):
                self._current.append(tail)
                tail = b""
            elif tail and _HEADER_RE.match(tail):
                self._flush(out)
                self._current.append(tail)
                tail = b""
            self._flush(out)
            out.append(tail)
            self.done = True
        return b"".join(out)

    def _flush(self, out: list[bytes]) -> None:
        if self._current:
            text = b"".join(self._current)
            self._current = []
            out.append(self.rewrite(header_name(text), text))
