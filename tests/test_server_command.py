"""`graphgen serve` as a command: arguments, start-up on loopback, a clean stop on Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("aiohttp", reason="the server needs aiohttp: pip install 'graphgen[serve]'")

from graphgen.server.command import add_serve_parser, cmd_serve  # noqa: E402

LAUNCH = ("import sys, argparse\n"
          "from graphgen.server.command import add_serve_parser\n"
          "parser = argparse.ArgumentParser(prog='graphgen')\n"
          "add_serve_parser(parser.add_subparsers())\n"
          "args = parser.parse_args(sys.argv[1:])\n"
          "sys.exit(args.handler(args))\n")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="graphgen")
    add_serve_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_defaults_are_loopback_and_comfyui_port():
    args = parse()
    assert args.host == "127.0.0.1" and args.port == 8188 and args.handler is cmd_serve
    assert str(args.output_dir) == "output" and str(args.input_dir) == "input" and str(args.user_dir) == "user"
    assert args.allow_host == []
    assert parse("--allow-host", "studio.lan", "--allow-host", "gpu-box").allow_host == ["studio.lan", "gpu-box"]


@pytest.mark.parametrize("argv, message", [
    (["--plugins", "/no/such/folder"], "--plugins /no/such/folder: no such folder"),
    (["--templates", "/no/such/folder"], "--templates /no/such/folder: no such folder"),
    (["--port", "70000"], "is not a port number"),
    (["--max-upload-mb", "0"], "must be positive"),
    (["--front-end-root", "/"], "no index.html"),
])
def test_bad_arguments_are_usage_errors(capsys, argv, message):
    assert cmd_serve(parse(*argv)) == 2
    assert message in capsys.readouterr().err


def test_serve_starts_answers_and_stops_cleanly_on_ctrl_c(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = ["--output-dir", str(tmp_path / "out"), "--input-dir", str(tmp_path / "in"), "--user-dir",
              str(tmp_path / "user")]
    try:
        clash = subprocess.run([sys.executable, "-c", LAUNCH, "serve", "--port", str(taken), *common],
                               capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    finally:
        busy.close()
    assert clash.returncode == 1 and f"cannot listen on 127.0.0.1:{taken}" in clash.stderr

    process = subprocess.Popen([sys.executable, "-c", LAUNCH, "serve", "--port", "0", *common],
                               stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        url = None
        lines = []
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            url = match.group(1) if match else None
            assert line or process.poll() is None, "".join(lines)
        assert url, "".join(lines)
        with urllib.request.urlopen(url + "/api/users", timeout=10) as response:
            assert json.loads(response.read()) == {"storage": "server", "migrated": True}
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert (tmp_path / "out").is_dir() and (tmp_path / "in").is_dir() and (tmp_path / "user").is_dir()


def test_without_aiohttp_the_command_says_what_to_install(capsys, monkeypatch):
    code = ("import sys\nsys.modules['aiohttp'] = None\n"
            "import graphgen.server.command as command\n"
            "assert 'torch' not in sys.modules\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0, "importing it stays light"
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    assert cmd_serve(parse()) == 2
    assert "pip install 'graphgen[serve]'" in capsys.readouterr().err
