"""The editor's static files: ComfyUI's frontend from the installed `comfyui-frontend-package`."""

from __future__ import annotations

import html
import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

INSTALL_HINT = "pip install 'graphgen[serve]'  (or: pip install comfyui-frontend-package)"


def find_frontend(explicit: Path | None = None) -> Path | None:
    """The folder holding the editor's `index.html`, or None when the frontend is not installed."""
    if explicit is not None:
        return explicit if (explicit / "index.html").is_file() else None
    try:
        spec = importlib.util.find_spec("comfyui_frontend_package")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    static = Path(spec.origin).parent / "static"
    return static if (static / "index.html").is_file() else None


def frontend_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("comfyui-frontend-package")
    except Exception:
        return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_handler(frontend: Path) -> Handler:
    """`GET /<path>`: a file of the editor (never outside its folder); a JSON 404 otherwise."""
    from graphgen.files import UnsafePathError, safe_join
    from graphgen.server.responses import error_response

    async def static(request: web.Request) -> web.StreamResponse:
        relative = request.match_info.get("path", "")
        if not relative or relative.startswith("api/"):
            return error_response(404, "not_found", f"no such endpoint: /{relative}")
        try:
            path = safe_join(frontend, relative)
        except UnsafePathError:
            return error_response(404, "not_found", f"no such file: /{relative}")
        if not path.is_file():
            return error_response(404, "not_found", f"no such file: /{relative}")
        return web.FileResponse(path)

    return static


def index_handler(frontend: Path | None) -> Handler:
    """`GET /`: the editor, or a page saying how to install it (the API works either way)."""

    async def index(request: web.Request) -> web.StreamResponse:
        if frontend is not None:
            return web.FileResponse(frontend / "index.html", headers={"Cache-Control": "no-cache"})
        page = ("<!doctype html><meta charset='utf-8'><title>graphgen</title>"
                "<h1>graphgen server</h1><p>The API is running (<code>/prompt</code>, <code>/ws</code>, "
                "<code>/object_info</code>...), but ComfyUI's editor is not installed. Install it with:</p>"
                f"<pre>{html.escape(INSTALL_HINT)}</pre><p>and restart <code>graphgen serve</code>.</p>")
        return web.Response(text=page, content_type="text/html")

    return index
