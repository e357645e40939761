"""The aiohttp application: ComfyUI's HTTP and websocket API over one graphgen `Engine`.

Every API route answers both as `/api/X` (what the editor asks) and `/X` (classic API clients).
Errors are JSON in ComfyUI's shape; an unexpected failure is logged and answered with a short
JSON 500 that carries no traceback. State-changing requests from another web site (an `Origin`
that is not this server) are refused, and so is any request for a foreign host name while the
server is bound to a loopback address (`graphgen.server.hosts`), so that a page in the user's
browser cannot drive or read a local server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

import graphgen
from graphgen.compat.server import PromptServer
from graphgen.engine import Engine
from graphgen.server import media, prompts, userdata
from graphgen.server.frontend import find_frontend, frontend_version, index_handler, static_handler
from graphgen.server.hosts import host_allowed
from graphgen.server.object_info import node_definition, object_info
from graphgen.server.responses import dumps, error_body, error_response, json_response
from graphgen.server.state import STATE_KEY, ServerConfig, ServerState, state_of
from graphgen.server.templates import MODULE
from graphgen.server.ws import make_handler

log = logging.getLogger("graphgen.server")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


# -- middleware ------------------------------------------------------------------------------------

def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    host = request.host or ""
    return bool(parts.netloc) and parts.netloc.lower() == host.lower()


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse foreign Host names (DNS rebinding) and cross-site writes; answer every error as JSON, never with
    a traceback."""
    config = request.app[STATE_KEY].config
    host = request.headers.get("Host")
    if not host_allowed(host, config.host, config.allowed_hosts):
        return error_response(403, "forbidden_host",
                              f"requests for the host {host!r} are refused: this server listens on {config.host} and "
                              "answers only to localhost, 127.0.0.1 and [::1] (a guard against DNS rebinding); to "
                              "reach it under another name, start it with --allow-host NAME")
    is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
    if (request.method not in SAFE_METHODS or is_ws) and not _same_origin(request):
        return error_response(403, "forbidden_origin",
                              f"requests from {request.headers.get('Origin')!r} are refused: only pages served by "
                              "this server may change its state")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or (exc.content_type == "application/json" and exc.text):
            raise
        kind = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else \
            f"the request is larger than the server's limit ({request.app[STATE_KEY].config.max_upload_bytes} bytes)"
        return web.json_response(error_body(kind, message), status=exc.status, dumps=dumps)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "server_error", "internal server error (see the server log)")


# -- small endpoints -----------------------------------------------------------------------------------

async def get_object_info(request: web.Request) -> web.Response:
    state = state_of(request)
    loop = asyncio.get_running_loop()

    def build() -> dict[str, Any]:
        return object_info(state.engine.registry.specs(), state.input_dir,
                           on_error=lambda name, exc: log.warning("node %s cannot be described: %s", name, exc),
                           models_dir=state.engine.settings.models_dir)

    return json_response(await loop.run_in_executor(None, build))


async def get_object_info_node(request: web.Request) -> web.Response:
    state = state_of(request)
    name = request.match_info["node_class"]
    if name not in state.engine.registry:
        return json_response({})
    loop = asyncio.get_running_loop()
    spec = state.engine.registry.get(name)
    return json_response({name: await loop.run_in_executor(None, node_definition, spec, state.input_dir,
                                                            state.engine.settings.models_dir)})


def _memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0, 0


def _devices() -> list[dict[str, Any]]:
    torch = sys.modules.get("torch")  # reported only once a run loaded it: never imported just for this
    devices: list[dict[str, Any]] = []
    if torch is not None:
        try:
            if torch.cuda.is_available():
                for index in range(torch.cuda.device_count()):
                    free, total = torch.cuda.mem_get_info(index)
                    devices.append({"name": torch.cuda.get_device_name(index), "type": "cuda", "index": index,
                                    "vram_total": total, "vram_free": free, "torch_vram_total": total,
                                    "torch_vram_free": free})
        except Exception:
            pass
    if not devices:
        total, free = _memory()
        devices.append({"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                        "torch_vram_total": 0, "torch_vram_free": 0})
    return devices


async def get_system_stats(request: web.Request) -> web.Response:
    total, free = _memory()
    torch = sys.modules.get("torch")
    return json_response({
        "system": {"os": sys.platform, "python_version": sys.version, "embedded_python": False,
                   "comfyui_version": graphgen.__version__, "graphgen_version": graphgen.__version__,
                   "comfyui_frontend_version": frontend_version() or "", "required_frontend_version": "",
                   "pytorch_version": getattr(torch, "__version__", ""), "argv": ["graphgen", "serve"],
                   "ram_total": total, "ram_free": free},
        "devices": _devices()})


async def get_features(request: web.Request) -> web.Response:
    return json_response(state_of(request).feature_flags())


def _constant(value: Any) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return json_response(value)

    return handler


async def get_templates(request: web.Request) -> web.Response:
    state = state_of(request)
    return json_response(await asyncio.get_running_loop().run_in_executor(None, state.templates.index))


async def get_template(request: web.Request) -> web.StreamResponse:
    """`/workflow_templates/<module>/<name>.json` (the graph) or `.webp/.png/.jpg` (its thumbnail)."""
    state = state_of(request)
    module, file = request.match_info["module"], request.match_info["file"]
    name, _, suffix = file.rpartition(".")
    loop = asyncio.get_running_loop()
    if module == MODULE and suffix == "json":
        data = await loop.run_in_executor(None, state.templates.load, name)
        if data is not None:
            return json_response(data)
    elif module == MODULE:
        picture = state.templates.thumbnail(name, suffix)
        if picture is not None:
            return web.FileResponse(picture)
    return error_response(404, "not_found", f"no template file {module}/{file}")


API_ROUTES: list[tuple[str, str, Any]] = [
    *prompts.ROUTES, *media.ROUTES, *userdata.ROUTES,
    ("GET", "/object_info", get_object_info), ("GET", "/object_info/{node_class}", get_object_info_node),
    ("GET", "/system_stats", get_system_stats), ("GET", "/features", get_features),
    ("GET", "/extensions", _constant([])), ("GET", "/embeddings", _constant([])),
    ("GET", "/i18n", _constant({})), ("GET", "/models", _constant([])),
    ("GET", "/models/{folder}", _constant([])), ("GET", "/experiment/models", _constant([])),
    ("GET", "/experiment/models/{folder}", _constant([])), ("GET", "/global_subgraphs", _constant({})),
    ("GET", "/node_replacements", _constant({})),
    ("GET", "/workflow_templates", get_templates), ("GET", "/workflow_templates/{module}/{file}", get_template),
]


# -- the app -----------------------------------------------------------------------------------------------

def create_app(engine: Engine, config: ServerConfig | None = None) -> web.Application:
    """The server for `engine`. Its queue worker starts with the app and stops with it."""
    config = config or ServerConfig()
    state = ServerState(engine, config)
    app = web.Application(middlewares=[guard], client_max_size=config.max_upload_bytes + 64 * 1024)
    app[STATE_KEY] = state

    def hello(sid: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [{"type": "status", "data": {
            "status": {"exec_info": {"queue_remaining": state.queue.remaining()}}, "sid": sid}}]
        running, _ = state.queue.snapshot()
        if running and running[0].client_id == sid and running[0].current_node:
            messages.append({"type": "executing", "data": {"node": running[0].current_node,
                                                           "display_node": running[0].current_node,
                                                           "prompt_id": running[0].prompt_id}})
        return messages

    websocket = make_handler(state.hub, hello, state.feature_flags)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/api/ws", websocket)
    for method, path, handler in API_ROUTES:
        app.router.add_route(method, "/api" + path, handler)
        app.router.add_route(method, path, handler)
    # Routes ComfyUI packs declared on `PromptServer.instance.routes` (plain aiohttp handlers).
    pack_server = PromptServer.instance
    for route in pack_server.route_defs():
        try:
            app.router.add_routes([route])
        except (ValueError, RuntimeError) as exc:  # a pack route clashing with graphgen's own
            log.warning("pack route %s not served: %s", route, exc)
    app.router.add_get("/templates/index.json", _constant([]))  # ComfyUI's own templates: none here
    app.router.add_get("/templates/index_logo.json", _constant({}))

    frontend = find_frontend(config.frontend_dir)
    app.router.add_get("/", index_handler(frontend))
    if frontend is not None:
        app.router.add_get("/{path:.*}", static_handler(frontend))
    else:
        log.warning("ComfyUI's editor is not installed; serving the API only")

    async def on_startup(app: web.Application) -> None:
        state.hub.loop = asyncio.get_running_loop()
        pack_server.attach(state.hub.publish, state.hub.loop)  # send_sync outside a run
        state.queue.start()

    async def on_shutdown(app: web.Application) -> None:
        pack_server.attach(None)
        await state.hub.close_all()

    async def on_cleanup(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, state.queue.stop)
        state.validator.shutdown(wait=False)

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
