"""The `/ws` websocket: who is connected, and delivering messages published from the worker thread.

`Hub.publish` may be called from any thread: the message is serialised there and handed to the
event loop with `call_soon_threadsafe`. Each client has its own bounded outgoing queue and sender
task, so a slow or vanished client never blocks the queue worker or other clients (a client whose
queue overflows is disconnected).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from graphgen.server.responses import dumps

log = logging.getLogger("graphgen.server")
CLIENT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
MAX_QUEUED_MESSAGES = 20_000


class Client:
    """One websocket connection."""

    def __init__(self, sid: str, ws: web.WebSocketResponse) -> None:
        self.sid = sid
        self.ws = ws
        self.outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue(maxsize=MAX_QUEUED_MESSAGES)
        self.feature_flags: dict[str, Any] = {}

    def push(self, text: str | bytes | None) -> bool:
        try:
            self.outbox.put_nowait(text)
            return True
        except asyncio.QueueFull:
            return False

    async def pump(self) -> None:
        """Send queued messages in order until told to stop or the connection goes."""
        while True:
            text = await self.outbox.get()
            if text is None or self.ws.closed:
                return
            try:
                if isinstance(text, bytes):  # ComfyUI's binary frames (progress text)
                    await self.ws.send_bytes(text)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return


class Hub:
    """Connected clients by id; thread-safe publishing."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clients: dict[str, set[Client]] = {}

    def add(self, client: Client) -> None:
        self.clients.setdefault(client.sid, set()).add(client)

    def remove(self, client: Client) -> None:
        group = self.clients.get(client.sid)
        if group is not None:
            group.discard(client)
            if not group:
                del self.clients[client.sid]

    def count(self) -> int:
        return sum(len(group) for group in self.clients.values())

    def publish(self, sid: str | None, message: dict[str, Any] | bytes) -> None:
        """Send `message` (JSON, or a ready binary frame) to client `sid` (None: to everyone).
        Callable from any thread."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        text = message if isinstance(message, bytes) else dumps(message)
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self.deliver, sid, text)

    def deliver(self, sid: str | None, text: str | bytes) -> None:
        """In the loop thread: queue `text` for its clients."""
        targets = [c for group in self.clients.values() for c in group] if sid is None else \
            list(self.clients.get(sid, ()))
        for client in targets:
            if not client.push(text):
                log.warning("websocket client %s is not reading its messages: disconnecting it", client.sid)
                self.remove(client)
                asyncio.ensure_future(client.ws.close())

    async def close_all(self) -> None:
        for client in [c for group in self.clients.values() for c in group]:
            client.push(None)
            with contextlib.suppress(Exception):
                await client.ws.close(code=1001, message=b"server shutdown")
        self.clients.clear()


def make_handler(hub: Hub, hello: Callable[[str], list[dict[str, Any]]],
                 feature_flags: Callable[[], dict[str, Any]]) -> Callable[[web.Request], Any]:
    """The `/ws` handler. `hello(sid)` gives the messages a client gets first (its `status` with `sid`)."""

    async def websocket(request: web.Request) -> web.StreamResponse:
        wanted = request.query.get("clientId", "")
        sid = wanted if CLIENT_ID.match(wanted) else uuid.uuid4().hex
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        client = Client(sid, ws)
        for message in hello(sid):
            client.push(dumps(message))
        hub.add(client)
        sender = asyncio.ensure_future(client.pump())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        continue
                    if isinstance(data, dict) and data.get("type") == "feature_flags":
                        flags = data.get("data")
                        client.feature_flags = flags if isinstance(flags, dict) else {}
                        client.push(dumps({"type": "feature_flags", "data": feature_flags()}))
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            hub.remove(client)
            client.push(None)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(sender, 2.0)
            if not sender.done():
                sender.cancel()
        return ws

    return websocket
