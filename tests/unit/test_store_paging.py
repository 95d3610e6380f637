"""store.paging: pages cover a listing exactly once, and the shared query rules."""
from __future__ import annotations

import pytest
from marshmallow import ValidationError

from chatterbox_server.store import paging


@pytest.mark.parametrize("total", [0, 1, 49, 50, 51, 137])
@pytest.mark.parametrize("size", [1, 7, 50, 100])
def test_walking_the_pages_returns_every_item_once_in_order(total, size):
    items = list(range(total))
    first = paging.paginate(items, 1, size)
    seen = []
    for number in range(1, first.total_pages + 1):
        page = paging.paginate(items, number, size)
        envelope = page.envelope()
        assert envelope["count"] == len(page.items) <= size
        assert envelope["has_previous"] == (number > 1)
        assert envelope["has_next"] == (number < first.total_pages)
        assert envelope["total_pages"] == first.total_pages
        seen += page.items
    assert seen == items
    assert paging.paginate(items, first.total_pages + 1, size).items == []


def test_an_empty_listing_has_one_empty_page():
    assert paging.paginate([], 1, 50).envelope() == {
        "count": 0, "page": 1, "page_size": 50, "total_pages": 1, "has_next": False, "has_previous": False}


@pytest.mark.parametrize("query", [{"page": "0"}, {"page": "x"}, {"page_size": "0"}, {"page_size": "101"},
                                   {"generation_type": "music"}])
def test_the_query_schema_refuses_out_of_range_values(query):
    with pytest.raises(ValidationError):
        paging.ListQuerySchema().load(query)


def test_the_query_schema_defaults_and_ignores_unknown_parameters():
    loaded = paging.ListQuerySchema().load({"other": "1"})
    assert loaded["page"] == 1 and loaded["page_size"] == 50 and loaded["search"] is None


def test_filters():
    assert paging.in_folder("a/b", "a") and paging.in_folder("a", "a") and not paging.in_folder("ab", "a")
    assert paging.in_folder("", "") and not paging.in_folder("", "a")
    assert paging.matches("NARR", ["x", None, "The Narrator"]) and not paging.matches("zz", ["x"])
    assert paging.matches(None, []) and paging.name_list(" a.wav, ,b.wav ") == ["a.wav", "b.wav"]
