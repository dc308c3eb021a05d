"""What the command prints: every line that carries data (signal names, payloads, errors,
log messages) goes through :func:`shown`, so the data cannot speak to the terminal.

A payload, a handler's exception message that quotes one, or bytes anyone could write to an
unsigned cache can hold terminal escape sequences (retitle the window, clear the screen) or
line breaks that fake lines of output. :func:`shown` writes each control character as an
escape (``\\x1b``, ``\\n``), the way ``repr()`` does, so the operator reads it instead of
the terminal running it.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import TextIO

#: C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidirectional
#: overrides and isolates (which reorder what is displayed).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown(text: object) -> str:
    """``str(text)`` with every control character escaped: safe to print to a terminal."""
    return _CONTROL.sub(_escape, str(text))


def say(line: object, *, err: bool = False, flush: bool = False) -> None:
    """Print one line built from data on stdout (or stderr), its control characters escaped."""
    stream: TextIO = sys.stderr if err else sys.stdout
    print(shown(line), file=stream, flush=flush)


class EscapingFormatter(logging.Formatter):
    """Log lines for a terminal: the message escaped as :func:`shown` does; a traceback keeps
    its own line breaks, but each exception's message in it (``RuntimeError: ...``) is one
    line, and every other control character is escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return shown(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        text = super().formatException(ei)
        error, seen = ei[1], set()
        while error is not None and id(error) not in seen:  # the chain, as printed
            seen.add(id(error))
            for part in traceback.format_exception_only(error):
                part = part.rstrip("\n")
                text = text.replace(part, shown(part))
            error = error.__cause__ or error.__context__
        return "\n".join(shown(line) for line in text.split("\n"))

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(shown(line) for line in super().formatStack(stack_info).split("\n"))
