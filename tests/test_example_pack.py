"""A custom-node folder written the way ComfyUI pack authors write them (tests/data/custom_nodes:
imports folder_paths, comfy.utils.ProgressBar, server.PromptServer, nodes; a lazy switch, list
nodes, a loop that expands itself; a schema-API pack) runs from `graphgen run --plugins` and from
`graphgen serve`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from graphgen import Engine

DATA = Path(__file__).parent / "data"
CUSTOM_NODES = DATA / "custom_nodes"
WORKFLOW = DATA / "example_pack_workflow.json"
# 0..3 mapped through +10 -> 46; the loop adds 2 three times -> 52; the switch takes that branch
# (ExampleExplode, on the other one, must never run); the schema node doubles it -> 104.
RESULT, SCALED = "52", "104"


def _texts(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*.txt"))}


def test_example_pack_runs_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-c", "import cli, sys; sys.exit(cli.main())", "run", str(WORKFLOW),
               "--plugins", str(CUSTOM_NODES), "--output-dir", str(out), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    started = {e["node_id"] for e in events if e["event"] == "node_started"}
    assert "5" not in started and {"1", "2", "3", "4", "6", "7", "8", "9", "10"} <= started
    progress = [e for e in events if e["event"] == "node_progress" and e["node_id"] == "7"]
    assert [(p["value"], p["total"]) for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    messages = [e for e in events if e["event"] == "node_message"]
    assert [(m["message"], m["data"]) for m in messages] == [("example_pack.counted", {"node": "7", "steps": 4})]
    assert _texts(out) == {"example/result_00001_.txt": RESULT, "example/scaled_00001_.txt": SCALED}
    assert "comfy" not in sys.modules and "folder_paths" not in sys.modules


def test_example_pack_runs_in_an_engine_and_reruns_from_the_cache(tmp_path):
    engine = Engine(output_dir=tmp_path / "out", plugins=[CUSTOM_NODES])
    assert not [p for p in engine.registry.problems if p.pack in ("example_pack", "schema_pack")]
    workflow = json.loads(WORKFLOW.read_text())
    first = engine.run(workflow)
    assert first.status == "success", first.failed
    assert first.ui["9"]["text"] == [f"9: {SCALED}"] and first.ui["8"]["text"] == [RESULT]
    workflow["9"]["inputs"]["factor"] = "x3"
    second = engine.run(workflow)
    assert second.status == "success", second.failed
    assert {"9", "10"} <= set(second.executed) and "4" not in second.executed
    assert second.ui["10"]["text"] == ["156"]


def test_example_pack_runs_from_graphgen_serve(tmp_path):
    aiohttp = pytest.importorskip("aiohttp")
    from graphgen.server import ServerConfig, ServerThread

    engine = Engine(output_dir=tmp_path / "out", plugins=[CUSTOM_NODES])
    config = ServerConfig(port=0, user_dir=tmp_path / "user", template_dirs=[])
    prompt = json.loads(WORKFLOW.read_text())

    async def main(url: str) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        async with aiohttp.ClientSession(url) as session:
            ws = await session.ws_connect("/ws?clientId=pack-test")
            async with session.post("/prompt", json={"prompt": prompt, "client_id": "pack-test"}) as answer:
                assert answer.status == 200, await answer.text()
                prompt_id = (await answer.json())["prompt_id"]
            messages: list[dict[str, Any]] = []
            while True:
                message = json.loads((await ws.receive(timeout=60)).data)
                messages.append(message)
                if message["type"] == "executing" and message["data"]["node"] is None and \
                        message["data"].get("prompt_id") == prompt_id:
                    break
            async with session.get(f"/history/{prompt_id}") as answer:
                history = (await answer.json())[prompt_id]
            async with session.get("/object_info") as answer:
                info = await answer.json()
            await ws.close()
            return messages, history, info

    with ServerThread(engine, config) as server:
        messages, history, info = asyncio.run(asyncio.wait_for(main(server.url), 120))
    kinds = [m["type"] for m in messages]
    assert "execution_success" in kinds and "execution_error" not in kinds
    assert {"type": "example_pack.counted", "data": {"node": "7", "steps": 4}} in messages
    assert any(m["type"] == "progress" and m["data"]["node"] == "7" for m in messages)
    ran = {m["data"]["node"] for m in messages if m["type"] == "executing" and m["data"]["node"]}
    assert "5" not in ran
    assert history["outputs"]["8"]["text"] == [RESULT] and history["outputs"]["10"]["text"] == [SCALED]
    assert info["SchemaScaleInt"]["input"]["required"]["factor"][0] == ["x2", "x3"]
    assert info["ExampleMakeList"]["output_is_list"] == [True]
    assert info["ExampleLazySwitch"]["input"]["required"]["on_true"] == ["*", {"lazy": True}]
    assert _texts(tmp_path / "out") == {"example/result_00001_.txt": RESULT, "example/scaled_00001_.txt": SCALED}
