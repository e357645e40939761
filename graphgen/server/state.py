"""The server's configuration and the objects its handlers share (one `Engine`, its queue, clients)."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from graphgen.engine import Engine
from graphgen.server.jobs import PromptQueue
from graphgen.server.templates import TemplateLibrary, default_template_folders
from graphgen.server.ws import Hub

DEFAULT_MAX_UPLOAD_MB = 100


@dataclass
class ServerConfig:
    """How `graphgen serve` runs.

    Attributes:
        host: Address to bind; loopback by default (anything else exposes the server to the network).
        port: TCP port (0: any free port).
        user_dir: Where the editor's settings and saved workflows live (`<user_dir>/default/...`).
        max_upload_bytes: Largest request body accepted (uploads, prompts, user files).
        template_dirs: Folders whose `*.json` workflows are offered as templates.
        frontend_dir: The editor's static files (default: the installed `comfyui-frontend-package`).
        history_size: Finished prompts kept for `/history` and `/jobs`.
        debug: Tracebacks in execution errors and the log.
        allowed_hosts: Host names answered besides the loopback names, when bound to a loopback
            address (see `graphgen.server.hosts`).
        confine_paths: Node file inputs (images, models, LoRAs, datasets) must lie inside the
            engine's input, models and output folders (`graphgen.paths`); prompts come from whoever
            reaches the server. An app that serves only itself may turn it off.
    """

    host: str = "127.0.0.1"
    port: int = 8188
    user_dir: Path = field(default_factory=lambda: Path("user"))
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    template_dirs: list[Path] = field(default_factory=default_template_folders)
    frontend_dir: Path | None = None
    history_size: int = 10_000
    debug: bool = False
    allowed_hosts: list[str] = field(default_factory=list)
    confine_paths: bool = True


class ServerState:
    """Everything a request handler needs, stored on the app under `STATE_KEY`."""

    def __init__(self, engine: Engine, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        # The served engine runs prompts from the network: its nodes read only inside its folders.
        engine.settings.confine_paths = config.confine_paths
        self.hub = Hub()
        self.queue = PromptQueue(engine, self.hub.publish, history_size=config.history_size, debug=config.debug)
        self.templates = TemplateLibrary(config.template_dirs, engine.registry)
        # Validation runs off the event loop, one at a time (Engine.prepare memoizes in a plain dict).
        self.validator = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="graphgen-validate")
        self.user_root = Path(config.user_dir) / "default"

    @property
    def output_dir(self) -> Path:
        return self.engine.settings.output_dir

    @property
    def input_dir(self) -> Path:
        return self.engine.settings.input_dir

    @property
    def temp_dir(self) -> Path:
        return self.engine.settings.temp_dir or self.engine.settings.output_dir / ".temp"

    def folder(self, kind: str) -> Path | None:
        """The folder of a `type` parameter: output, input or temp."""
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(kind)

    def feature_flags(self) -> dict[str, Any]:
        return {"supports_preview_metadata": False, "max_upload_size": self.config.max_upload_bytes}


STATE_KEY = web.AppKey("graphgen", ServerState)


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE_KEY]
