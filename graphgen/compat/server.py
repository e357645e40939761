"""`server`: ComfyUI's `PromptServer.instance`, as packs use it at import and while running.

- `PromptServer.instance.send_sync(event, data, sid=None)` becomes a message of the running node
  (graphgen's events: `graphgen serve` passes it to websocket clients as `{"type": event, "data": data}`);
  outside a run it goes straight to the attached server, if any.
- `PromptServer.instance.send_progress_text(text, node_id)` is the running node's `ctx.info`: printed
  by the live view, shown on the node in ComfyUI's editor (binary progress-text frame).
- `PromptServer.instance.routes` is an aiohttp `RouteTableDef` packs decorate at import; `graphgen
  serve` serves the routes whose handlers are plain aiohttp handlers (also under `/api`), after its
  own: a pack cannot replace one of graphgen's routes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from graphgen import compat
from graphgen.compat import _runtime

log = logging.getLogger("graphgen.compat")
Publish = Callable[[str | None, dict[str, Any] | bytes], None]


class BinaryEventTypes:
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3


class PromptServer:
    """The one instance packs reach as `PromptServer.instance`."""

    instance: PromptServer

    def __init__(self) -> None:
        self.routes = web.RouteTableDef()
        self.app = web.Application()
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.supports = ["custom_nodes_from_web"]
        self.loop: Any = None
        self.on_prompt_handlers: list[Callable[[dict[str, Any]], dict[str, Any]]] = []
        self._publish: Publish | None = None

    # -- wiring (graphgen serve) -----------------------------------------------------------------
    def attach(self, publish: Publish | None, loop: Any = None) -> None:
        """Route messages sent outside a run to `publish(sid, message)` (None detaches)."""
        self._publish = publish
        self.loop = loop

    def route_defs(self) -> list[web.AbstractRouteDef]:
        """The routes packs declared, that aiohttp can serve."""
        served: list[web.AbstractRouteDef] = []
        for route in self.routes:
            handler = getattr(route, "handler", None)
            if isinstance(route, web.StaticDef):
                served.append(route)
            elif isinstance(route, web.RouteDef) and callable(handler):
                # The handler may import ComfyUI's modules when called: it runs in their scope. As in
                # ComfyUI, it answers under `/api` too (where the editor's `api.fetchApi` asks).
                wrapped = compat.scoped(handler)
                served.append(web.RouteDef(route.method, route.path, wrapped, route.kwargs))
                if not route.path.startswith("/api/"):
                    served.append(web.RouteDef(route.method, "/api" + route.path, wrapped, dict(route.kwargs)))
            else:
                log.warning("pack route %r is not a plain aiohttp handler: not served", route)
        return served

    # -- what packs call ------------------------------------------------------------------------
    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """Send `{"type": event, "data": data}` to the client(s), from any thread."""
        ctx = _runtime.context()
        send = getattr(ctx, "send", None) if ctx is not None else None
        if send is not None:
            send(event, data)
        elif self._publish is not None:
            self._publish(sid, {"type": event, "data": data})

    def send_progress_text(self, text: str | bytes, node_id: str, sid: str | None = None) -> None:
        """A line shown on a node (ComfyUI's progress text): the running node's `ctx.info` (the live
        view prints it; `graphgen serve` sends the editor's binary progress-text frame)."""
        line = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
        ctx = _runtime.context()
        info = getattr(ctx, "info", None) if ctx is not None else None
        if info is not None:
            info(line)
        elif self._publish is not None:
            from graphgen.server.messages import progress_text_frame

            self._publish(sid, progress_text_frame(str(node_id), line))

    async def send(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def add_on_prompt_handler(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Kept for packs that register one; graphgen does not rewrite prompts through them."""
        self.on_prompt_handlers.append(handler)


PromptServer.instance = PromptServer()
