"""Running the server: in the foreground (`graphgen serve`) or in a background thread (apps, tests).

    with ServerThread(engine, ServerConfig(port=0)) as server:
        requests.post(server.url + "/prompt", json={...})
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from aiohttp import web

from graphgen.engine import Engine
from graphgen.server.app import create_app
from graphgen.server.state import STATE_KEY, ServerConfig, ServerState


async def start_site(app: web.Application, host: str, port: int, *, access_log: bool = False) -> tuple[web.AppRunner, int]:
    """Start `app` on host:port (port 0: a free one); returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access") if access_log else None,
                           handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound


class ServerThread:
    """The server on its own event loop in a daemon thread; `url` once started."""

    def __init__(self, engine: Engine, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig(port=0)
        self.app = create_app(engine, self.config)
        self.loop = asyncio.new_event_loop()
        self.port: int | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._main, name="graphgen-server", daemon=True)

    @property
    def state(self) -> ServerState:
        return self.app[STATE_KEY]

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"http://{host}:{self.port}"

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._runner, self.port = self.loop.run_until_complete(
                start_site(self.app, self.config.host, self.config.port))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the server did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
