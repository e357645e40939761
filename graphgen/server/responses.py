"""JSON answers in ComfyUI's shapes, and reading request bodies without ever answering 500."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def dumps(value: Any) -> str:
    """Strict JSON (browsers reject NaN/Infinity): such numbers, which Python's JSON reader lets into
    prompts, are written as null."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:
        from graphgen.server.messages import json_safe

        return json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False, default=str)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(value, status=status, dumps=dumps, headers=headers)


def error_body(kind: str, message: str, details: str = "", node_errors: dict[str, Any] | None = None,
               extra_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """`{"error": {type, message, details, extra_info}, "node_errors": {...}}`, ComfyUI's error shape."""
    return {"error": {"type": kind, "message": message, "details": details, "extra_info": extra_info or {}},
            "node_errors": node_errors or {}}


def error_response(status: int, kind: str, message: str, details: str = "",
                   node_errors: dict[str, Any] | None = None) -> web.Response:
    return json_response(error_body(kind, message, details, node_errors), status=status)


class BadRequest(web.HTTPBadRequest):
    """A 400 whose body is ComfyUI's JSON error shape."""

    def __init__(self, kind: str, message: str, details: str = "", status: int = 400) -> None:
        super().__init__(text=dumps(error_body(kind, message, details)), content_type="application/json")
        if status != 400:
            self.set_status(status)


async def read_json(request: web.Request, *, allow_empty: bool = False) -> Any:
    """The request body as JSON; a ComfyUI-shaped 400 when it is not JSON (413 when too large)."""
    raw = await request.read()  # aiohttp enforces client_max_size here
    if not raw.strip():
        if allow_empty:
            return None
        raise BadRequest("invalid_json", "the request body is empty; send a JSON object")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise BadRequest("invalid_json", f"the request body is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BadRequest("invalid_json", f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                                         f"column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise BadRequest("invalid_json", f"the request body cannot be read: {type(exc).__name__}") from None


def flag(value: str | None, default: bool = False) -> bool:
    """A query flag: `true`/`1`/`yes` (anything else is false)."""
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")
