"""Response headers that carry text from an error, a client or a file name.

Every such header is built here. werkzeug refuses a header value with a newline (a 500 after the
work is done), a character outside Latin-1 cannot be sent at all, and an error text can be pages
long: so a value is put on one line, printable ASCII only (anything else escaped as \\uXXXX), and
cut to a bound. No Flask, no I/O: unit-tested in tests/unit/test_header_text.py.
"""
from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

HEADER_LIMIT = 300          # characters of a header value that carries free text
_SPACE_RUN = re.compile(r"\s+")
_ELLIPSIS = "..."


def _printable(char: str) -> str:
    """A character as it may appear in a header: control and format characters become spaces."""
    if unicodedata.category(char)[0] in "CZ" and char != " ":
        return " "
    return char


def header_value(text: object, limit: int = HEADER_LIMIT) -> str:
    """`text` as one line of printable ASCII of at most `limit` characters."""
    flat = "".join(_printable(char) for char in str(text))
    flat = _SPACE_RUN.sub(" ", flat).strip()
    ascii_text = flat.encode("ascii", "backslashreplace").decode("ascii")
    if len(ascii_text) <= limit:
        return ascii_text
    return ascii_text[: max(0, limit - len(_ELLIPSIS))].rstrip() + _ELLIPSIS


def joined(values: list[str] | tuple[str, ...], separator: str = ",", limit: int = HEADER_LIMIT * 4) -> str:
    """A list in one header (file names, field names), each item made safe first."""
    return header_value(separator.join(header_value(value, limit) for value in values), limit)


def attachment(filename: str) -> str:
    """Content-Disposition for a download (RFC 6266): an ASCII `filename` with quotes and
    backslashes replaced for old clients, and the exact name as UTF-8 in `filename*`."""
    base = header_value(filename, 200).replace("\\", "_").replace('"', "_")
    value = f'attachment; filename="{base}"'
    if base != filename:
        value += f"; filename*=UTF-8''{quote(filename[:200], safe='')}"
    return value
