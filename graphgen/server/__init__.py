"""`graphgen serve`: ComfyUI's HTTP/websocket API over one graphgen `Engine`, so ComfyUI's own editor
(the `comfyui-frontend-package`) and existing ComfyUI API clients drive graphgen.

Needs aiohttp (`pip install 'graphgen[serve]'`, which also brings the editor). Importing this
package imports nothing heavy (`graphgen.server.command` is loaded by every `graphgen` command);
the names below are loaded on first use.

    from graphgen import Engine
    from graphgen.server import ServerConfig, ServerThread

    with ServerThread(Engine(output_dir="out"), ServerConfig(port=8188)) as server:
        print("open", server.url)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graphgen.server.app import create_app
    from graphgen.server.background import ServerThread, start_site
    from graphgen.server.state import ServerConfig

__all__ = ["ServerConfig", "ServerThread", "create_app", "start_site"]
_WHERE = {"create_app": "app", "ServerThread": "background", "start_site": "background", "ServerConfig": "state"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"graphgen.server.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'graphgen.server' has no attribute {name!r}")
