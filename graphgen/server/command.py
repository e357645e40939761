"""`graphgen serve`: the command-line face of the server (wired into `cli.py` by the lead).

Imports nothing heavy at import time: `cli.py` builds its parser on every invocation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_serve_parser(subparsers: Any) -> None:
    """Add the `serve` sub-command to `graphgen`'s argument parser."""
    serve = subparsers.add_parser(
        "serve", help="run a ComfyUI-compatible server: ComfyUI's editor and API clients drive graphgen",
        description="Serve ComfyUI's HTTP/websocket API (and its editor, when comfyui-frontend-package is "
                    "installed) over one graphgen engine. Binds to 127.0.0.1 unless --host says otherwise.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes the server to the network)")
    serve.add_argument("--port", type=int, default=8188, help="port (default 8188)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="also answer requests that name the server NAME (repeatable); on a loopback address "
                            "only localhost, 127.x and [::1] are answered, which stops DNS rebinding")
    serve.add_argument("--models-dir", type=Path, default=None, help="models folder (ComfyUI layout)")
    serve.add_argument("--output-dir", type=Path, default=Path("output"), help="where outputs go (default: output)")
    serve.add_argument("--input-dir", type=Path, default=Path("input"),
                       help="where uploads and input images go (default: input)")
    serve.add_argument("--user-dir", type=Path, default=Path("user"),
                       help="editor settings and saved workflows (default: user)")
    serve.add_argument("--plugins", action="append", default=[], metavar="DIR",
                       help="load node packs from this plugin folder (repeatable; also GRAPHGEN_PLUGIN_PATH)")
    serve.add_argument("--templates", action="append", default=[], type=Path, metavar="DIR",
                       help="offer the *.json workflows in DIR as templates in the editor (repeatable)")
    serve.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload/request (default 100 MB)")
    serve.add_argument("--front-end-root", type=Path, default=None, metavar="DIR",
                       help="serve the editor from DIR instead of the installed comfyui-frontend-package")
    serve.add_argument("--debug", action="store_true", help="tracebacks in errors and an access log")
    serve.set_defaults(handler=cmd_serve)


def _is_loopback(host: str) -> bool:
    from graphgen.server.hosts import is_loopback

    return is_loopback(host) if host else False


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"graphgen serve: error: {message}", file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until Ctrl-C (or SIGTERM); the running prompt is cancelled on the way out."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return _fail("the server needs aiohttp: pip install 'graphgen[serve]'")
    if not 0 <= args.port <= 65535:
        return _fail(f"--port {args.port} is not a port number")
    if args.max_upload_mb <= 0:
        return _fail("--max-upload-mb must be positive")
    for directory in args.plugins:
        if not Path(directory).is_dir():
            return _fail(f"--plugins {directory}: no such folder")
    for directory in args.templates:
        if not Path(directory).is_dir():
            return _fail(f"--templates {directory}: no such folder")
    if args.front_end_root is not None and not (args.front_end_root / "index.html").is_file():
        return _fail(f"--front-end-root {args.front_end_root}: no index.html there")

    import asyncio
    import logging

    from graphgen import Engine
    from graphgen.server.frontend import INSTALL_HINT, find_frontend
    from graphgen.server.state import ServerConfig
    from graphgen.server.templates import default_template_folders

    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("aiohttp.access",):
        logging.getLogger(noisy).setLevel(logging.INFO if args.debug else logging.WARNING)
    engine = Engine(output_dir=args.output_dir, input_dir=args.input_dir, models_dir=args.models_dir,
                    plugins=args.plugins)
    for problem in engine.registry.problems:
        print(f"graphgen serve: warning: {problem.pack}: {problem.message}", file=sys.stderr)
    for folder in (args.output_dir, args.input_dir, args.user_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(host=args.host, port=args.port, user_dir=args.user_dir,
                          max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                          template_dirs=[*args.templates, *default_template_folders()],
                          frontend_dir=args.front_end_root, debug=args.debug, allowed_hosts=list(args.allow_host))
    if not _is_loopback(args.host):
        print(f"graphgen serve: warning: listening on {args.host}: anyone who can reach this address can run "
              "workflows and read the output folder. Use the default 127.0.0.1 unless you mean it.", file=sys.stderr)
    if find_frontend(args.front_end_root) is None:
        print(f"graphgen serve: the editor is not installed (API only); {INSTALL_HINT}", file=sys.stderr)
    try:
        asyncio.run(_serve(engine, config, args.debug))
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


async def _serve(engine: Any, config: Any, debug: bool) -> None:
    import asyncio
    import signal

    from graphgen.server.app import create_app
    from graphgen.server.background import start_site

    app = create_app(engine, config)
    runner, port = await start_site(app, config.host, config.port, access_log=debug)
    host = config.host if ":" not in config.host else f"[{config.host}]"
    print(f"graphgen serve: http://{host}:{port}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt instead
            pass
    try:
        await stop.wait()
    finally:
        print("graphgen serve: stopping (the running prompt is cancelled)", file=sys.stderr, flush=True)
        await runner.cleanup()
