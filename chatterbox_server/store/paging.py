"""The one pagination and filter helper of every listing endpoint (voices, VC inputs, outputs).

Listings are sorted by a total order before they are cut into pages, so walking the pages from 1 to
total_pages returns every item once, whatever order the file system lists them in. No I/O here.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from marshmallow import EXCLUDE, Schema, fields, validate

T = TypeVar("T")
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    page_size: int
    total: int

    @property
    def total_pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))

    def envelope(self) -> dict[str, Any]:
        """The paging fields of the Extended API's list responses."""
        return {"count": len(self.items), "page": self.page, "page_size": self.page_size,
                "total_pages": self.total_pages, "has_next": self.page < self.total_pages,
                "has_previous": self.page > 1}


def paginate(items: Sequence[T], page: int, page_size: int) -> Page[T]:
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page {page} / page_size {page_size} out of range")
    start = (page - 1) * page_size
    return Page(list(items[start:start + page_size]), page, page_size, len(items))


class ListQuerySchema(Schema):
    """The query parameters the listing and bulk-delete endpoints share (the peer's names)."""

    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, error="Must be 1 or more."))
    page_size = fields.Integer(load_default=DEFAULT_PAGE_SIZE, validate=validate.Range(
        min=1, max=MAX_PAGE_SIZE, error=f"Must be from 1 to {MAX_PAGE_SIZE}."))
    search = fields.String(load_default=None)
    folder = fields.String(load_default=None)
    project = fields.String(load_default=None)
    filenames = fields.String(load_default=None)
    generation_type = fields.String(load_default=None, validate=validate.OneOf(
        ("tts", "vc", "concat"), error="Must be one of: tts, vc, concat."))
    tag = fields.String(load_default=None)
    confirm = fields.String(load_default="false")


def matches(search: str | None, texts: Iterable[str | None]) -> bool:
    """Case-insensitive substring search over several fields; no search matches everything."""
    if not search:
        return True
    needle = search.lower()
    return any(needle in text.lower() for text in texts if text)


def in_folder(folder_path: str, wanted: str) -> bool:
    """The folder filter is hierarchical: "a" matches files in "a" and in "a/b", not in "ab"."""
    return not wanted or folder_path == wanted or folder_path.startswith(wanted + "/")


def name_list(filenames: str | None) -> list[str]:
    """`filenames=a.wav, b.wav` -> ["a.wav", "b.wav"]."""
    return [name.strip() for name in (filenames or "").split(",") if name.strip()]


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
