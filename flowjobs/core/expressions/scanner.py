"""Tokenizer for expressions: turns text into positioned tokens on demand for the parser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowjobs.core.errors import ExpressionError

_SIMPLE_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
# Python refuses int() on longer digit strings (CVE-2020-10735 guard); report it as a parse error.
_MAX_INT_DIGITS = 4000


@dataclass(frozen=True, slots=True)
class Token:
    """One token: ``kind`` is the punctuation itself or one of ``name``, ``number``, ``string``, ``end``."""

    kind: str
    text: str
    pos: int
    value: Any = None

    def describe(self) -> str:
        """How error messages show this token."""
        return "end of expression" if self.kind == "end" else repr(self.text)


def _is_name_start(ch: str) -> bool:
    return ch.isalpha() or ch in "_$"


def _is_name_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def is_path_name_char(ch: str) -> bool:
    """Characters allowed in a ``.name`` path segment (JSON keys often hold dashes)."""
    return ch.isalnum() or ch in "_$-"


class Scanner:
    """On-demand tokenizer with one token of lookahead.

    Path names after ``.`` are scanned in a separate mode (``path_name``) because they may start
    with a digit or contain ``-``, which would otherwise read as a number.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self._peeked: Token | None = None

    def error(self, message: str, pos: int) -> ExpressionError:
        """An ``ExpressionError`` at ``pos`` in this text."""
        return ExpressionError(message, self.text, pos)

    def peek(self) -> Token:
        """The next token, without consuming it."""
        if self._peeked is None:
            self._peeked = self._scan()
        return self._peeked

    def next(self) -> Token:
        """Consume and return the next token."""
        tok = self.peek()
        self._peeked = None
        return tok

    def path_name(self) -> Token:
        """Scan the name that follows ``.`` or ``?.`` (must be called with no token peeked)."""
        assert self._peeked is None, "path_name() after peek() would skip a token"
        self._skip_space()
        text, start = self.text, self.pos
        end = start
        while end < len(text) and is_path_name_char(text[end]):
            end += 1
        if end == start:
            found = repr(text[start]) if start < len(text) else "end of expression"
            raise self.error(f"expected a name after '.', found {found}", start)
        self.pos = end
        return Token("name", text[start:end], start, text[start:end])

    def _skip_space(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        self.pos = pos

    def _scan(self) -> Token:
        self._skip_space()
        text, pos = self.text, self.pos
        if pos >= len(text):
            return Token("end", "", pos)
        ch = text[pos]
        two = text[pos : pos + 2]
        if two in ("==", "!=", ">=", "<=", "&&", "||", "?."):
            self.pos = pos + 2
            return Token(two, two, pos)
        if ch in "()[].@!<>":
            self.pos = pos + 1
            return Token(ch, ch, pos)
        if ch in "'\"":
            return self._string(pos)
        if ch in _DIGITS or (ch == "-" and pos + 1 < len(text) and text[pos + 1] in _DIGITS):
            return self._number(pos)
        if _is_name_start(ch):
            end = pos + 1
            while end < len(text) and _is_name_char(text[end]):
                end += 1
            self.pos = end
            return Token("name", text[pos:end], pos, text[pos:end])
        hints = {"=": "'=='", "&": "'&&'", "|": "'||'", "?": "'?.'"}
        if ch in hints:
            raise self.error(f"unexpected {ch!r}; did you mean {hints[ch]}?", pos)
        raise self.error(f"unexpected character {ch!r}", pos)

    def _number(self, start: int) -> Token:
        text = self.text
        end = start + 1 if text[start] == "-" else start
        while end < len(text) and text[end] in _DIGITS:
            end += 1
        is_float = False
        if end + 1 < len(text) and text[end] == "." and text[end + 1] in _DIGITS:
            is_float = True
            end += 2
            while end < len(text) and text[end] in _DIGITS:
                end += 1
        if end < len(text) and text[end] in "eE":
            exp = end + 1
            if exp < len(text) and text[exp] in "+-":
                exp += 1
            if exp < len(text) and text[exp] in _DIGITS:
                is_float = True
                end = exp
                while end < len(text) and text[end] in _DIGITS:
                    end += 1
        literal = text[start:end]
        value: int | float
        if is_float:
            value = float(literal)
            if value in (float("inf"), float("-inf")):
                raise self.error(f"number {literal} is out of range", start)
        else:
            if len(literal) > _MAX_INT_DIGITS:
                raise self.error("number has too many digits", start)
            value = int(literal)
        self.pos = end
        return Token("number", literal, start, value)

    def _string(self, start: int) -> Token:
        text = self.text
        quote = text[start]
        parts: list[str] = []
        pos = start + 1
        while True:
            # Copy runs of plain characters in one slice; escapes are rare.
            run_end = pos
            while run_end < len(text) and text[run_end] != quote and text[run_end] != "\\":
                run_end += 1
            parts.append(text[pos:run_end])
            pos = run_end
            if pos >= len(text):
                raise self.error("unterminated string", start)
            if text[pos] == quote:
                break
            char, pos = self._escape(pos)
            parts.append(char)
        self.pos = pos + 1
        return Token("string", text[start : pos + 1], start, "".join(parts))

    def _escape(self, pos: int) -> tuple[str, int]:
        """Decode the escape starting at the backslash at ``pos``; return it and the position after."""
        text = self.text
        if pos + 1 >= len(text):
            raise self.error("unterminated string", pos)
        code = text[pos + 1]
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code], pos + 2
        if code != "u":
            raise self.error(f"unknown escape '\\{code}'", pos)
        unit = self._hex4(pos)
        # JSON writes astral characters as a surrogate pair of \u escapes; join them back.
        if 0xD800 <= unit <= 0xDBFF and text[pos + 6 : pos + 8] == "\\u":
            low = self._hex4(pos + 6)
            if 0xDC00 <= low <= 0xDFFF:
                return chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)), pos + 12
        return chr(unit), pos + 6

    def _hex4(self, pos: int) -> int:
        digits = self.text[pos + 2 : pos + 6]
        if len(digits) != 4 or not all(d in _HEX for d in digits):
            raise self.error("'\\u' needs four hex digits", pos)
        return int(digits, 16)
