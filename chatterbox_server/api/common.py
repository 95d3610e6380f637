"""What the resource blueprints share: the listing query, the confirm rule, paging envelopes."""
from __future__ import annotations

from typing import Any

from flask import request

from chatterbox_server.api.bodies import load
from chatterbox_server.errors import ApiError
from chatterbox_server.store import paging, paths


def list_query() -> dict[str, Any]:
    """page, page_size, search, folder (or its alias project), filenames, generation_type, tag, confirm."""
    query = load(paging.ListQuerySchema(), request.args.to_dict())
    query["folder"] = paths.clean_relative(query["folder"] or query["project"], "folder")
    return query


def require_confirm(query: dict[str, Any], what: str) -> None:
    if not paging.truthy(query["confirm"]):
        raise ApiError(400, f"deleting {what} needs confirm=true", param="confirm", code="confirmation_required")


def require_criteria(query: dict[str, Any], names: tuple[str, ...], what: str) -> None:
    if not any(query[name] for name in names):
        raise ApiError(400, f"name the {what} to delete with one of: {', '.join(names)}", param=names[0],
                       code="missing_field")


def paged(entries: list[dict[str, Any]], query: dict[str, Any], key: str) -> dict[str, Any]:
    page = paging.paginate(entries, query["page"], query["page_size"])
    return {"success": True, key: page.items, **page.envelope(), f"total_{key}": page.total, "total": page.total}


def deletion(deleted: list[str], what: str) -> dict[str, Any]:
    count = len([name for name in deleted if not name.endswith(".json")])
    return {"success": True, "message": f"deleted {count} {what}", "deleted_files": deleted, "deleted_count": count}


def upload_flag(value: Any, param: str) -> bool:
    if value in (None, ""):
        return False
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ApiError(400, f"{param}: must be true or false", param=param, code="invalid_value")
    return paging.truthy(text)


def bool_arg(name: str, default: bool | None = False) -> bool | None:
    """A true/false query parameter (1/0, true/false, yes/no, on/off); 400 naming it otherwise."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, f"{name}: must be true or false", param=name)


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]; 400 naming it otherwise."""
    return _bounded_arg(name, default, low, high, int, "a whole number")


def float_arg(name: str, default: float | None, low: float, high: float) -> float | None:
    """A number query parameter within [low, high]; 400 naming it otherwise."""
    return _bounded_arg(name, default, low, high, float, "a number")


def _bounded_arg(name: str, default: Any, low: Any, high: Any, convert: Any, kind: str) -> Any:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = convert(raw)
    except ValueError:
        raise ApiError(400, f"{name}: must be {kind}", param=name) from None
    if not low <= value <= high:      # NaN fails this too
        raise ApiError(400, f"{name}: must be between {_shown(low)} and {_shown(high)}", param=name)
    return value


def _shown(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)
