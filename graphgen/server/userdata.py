"""`/users`, `/settings` and `/userdata`: the editor's settings and saved workflows, one local user.

Everything lives under `<user_dir>/default/`: settings in `comfy.settings.json`, saved workflows
in `workflows/`. Names go through `graphgen.files.safe_join`; writes are atomic.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from graphgen.files import UnsafePathError, atomic_write_bytes, atomic_write_text, safe_join
from graphgen.server.responses import BadRequest, error_response, flag, json_response, read_json
from graphgen.server.state import ServerState, state_of

SETTINGS_FILE = "comfy.settings.json"
MAX_LISTED = 10_000
_settings_lock = threading.Lock()


def _user_path(state: ServerState, relative: str) -> Path:
    try:
        return safe_join(state.user_root, relative)
    except UnsafePathError as exc:
        raise BadRequest("invalid_path", str(exc), status=403) from None


# -- users and settings -----------------------------------------------------------------------------

async def get_users(request: web.Request) -> web.Response:
    return json_response({"storage": "server", "migrated": True})


async def post_users(request: web.Request) -> web.Response:
    return error_response(400, "single_user", "this server has one local user; users cannot be created")


def _load_settings(state: ServerState) -> dict[str, Any]:
    path = state.user_root / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_settings(state: ServerState, settings: dict[str, Any]) -> None:
    state.user_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state.user_root / SETTINGS_FILE, json.dumps(settings, indent=2, ensure_ascii=False),
                      overwrite=True)


async def get_settings(request: web.Request) -> web.Response:
    return json_response(_load_settings(state_of(request)))


async def get_setting(request: web.Request) -> web.Response:
    return json_response(_load_settings(state_of(request)).get(request.match_info["setting_id"]))


async def post_settings(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("invalid_request", "send an object of setting id -> value")
    with _settings_lock:
        settings = _load_settings(state)
        settings.update(body)
        _save_settings(state, settings)
    return web.Response(status=200)


async def post_setting(request: web.Request) -> web.Response:
    state = state_of(request)
    value = await read_json(request, allow_empty=True)
    with _settings_lock:
        settings = _load_settings(state)
        settings[request.match_info["setting_id"]] = value
        _save_settings(state, settings)
    return web.Response(status=200)


# -- user files ----------------------------------------------------------------------------------------

def _info(path: Path, relative: str) -> dict[str, Any]:
    stat = path.stat()
    return {"path": relative, "size": stat.st_size, "modified": stat.st_mtime, "created": stat.st_ctime}


async def list_userdata(request: web.Request) -> web.Response:
    state = state_of(request)
    directory = request.query.get("dir", "")
    if not directory:
        raise BadRequest("invalid_request", "the 'dir' parameter is required")
    root = _user_path(state, directory)
    if not root.is_dir():
        return error_response(404, "not_found", f"no folder {directory!r}")
    recurse = flag(request.query.get("recurse"))
    full_info = flag(request.query.get("full_info"))
    split = flag(request.query.get("split"))
    out: list[Any] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recurse else []
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if full_info:
                out.append(_info(path, relative))
            elif split:
                out.append([relative, *relative.split("/")])
            else:
                out.append(relative)
            if len(out) >= MAX_LISTED:
                return json_response(out)
    return json_response(out)


async def get_userdata(request: web.Request) -> web.StreamResponse:
    path = _user_path(state_of(request), request.match_info["file"])
    if not path.is_file():
        return error_response(404, "not_found", f"no user file {request.match_info['file']!r}")
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def post_userdata(request: web.Request) -> web.Response:
    state = state_of(request)
    relative = request.match_info["file"]
    path = _user_path(state, relative)
    overwrite = flag(request.query.get("overwrite"), True)
    data = await request.read()
    if path.is_dir():
        raise BadRequest("invalid_path", f"{relative!r} is a folder")
    try:
        atomic_write_bytes(path, data, overwrite=overwrite)
    except FileExistsError:
        return error_response(409, "exists", f"{relative!r} exists")
    relative_posix = path.relative_to(state.user_root.resolve()).as_posix()
    if flag(request.query.get("full_info")):
        return json_response(_info(path, relative_posix))
    return json_response(relative_posix)


async def delete_userdata(request: web.Request) -> web.Response:
    path = _user_path(state_of(request), request.match_info["file"])
    if not path.is_file():
        return error_response(404, "not_found", f"no user file {request.match_info['file']!r}")
    path.unlink()
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    state = state_of(request)
    source = _user_path(state, request.match_info["file"])
    dest = _user_path(state, request.match_info["dest"])
    if not source.is_file():
        return error_response(404, "not_found", f"no user file {request.match_info['file']!r}")
    if dest.exists() and not flag(request.query.get("overwrite")):
        return error_response(409, "exists", f"{request.match_info['dest']!r} exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)
    relative = dest.relative_to(state.user_root.resolve()).as_posix()
    if flag(request.query.get("full_info")):
        return json_response(_info(dest, relative))
    return json_response(relative)


ROUTES = [
    ("GET", "/users", get_users), ("POST", "/users", post_users),
    ("GET", "/settings", get_settings), ("POST", "/settings", post_settings),
    ("GET", "/settings/{setting_id}", get_setting), ("POST", "/settings/{setting_id}", post_setting),
    ("GET", "/userdata", list_userdata),
    ("GET", "/userdata/{file}", get_userdata), ("POST", "/userdata/{file}", post_userdata),
    ("DELETE", "/userdata/{file}", delete_userdata),
    ("POST", "/userdata/{file}/move/{dest}", move_userdata),
]
