"""`graphgen serve`'s API on torch-free test nodes: shapes the editor needs, errors, safety, the queue."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="the server needs aiohttp: pip install 'graphgen[serve]'")

from engine_nodes import make_registry  # noqa: E402

from graphgen import Engine, Int, Node, Result, String  # noqa: E402
from graphgen.server import ServerConfig, ServerThread  # noqa: E402


class Slow(Node):
    """Output node: `steps` steps of `ms` milliseconds each, reporting progress (and honouring cancel)."""

    category = "test"
    output_node = True
    inputs = [String("tag", default=""), Int("steps", default=2, min=1, max=100_000),
              Int("ms", default=0, min=0, max=1000)]

    def run(self, tag: str, steps: int, ms: int) -> Result:
        for step in range(steps):
            if ms:
                time.sleep(ms / 1000)
            self.ctx.progress(step + 1, steps)
        return Result(ui={"values": [{"tag": tag}]})


class Says(Node):
    """Output node: an information line through `ctx.info`, one through a pack's `send_progress_text`."""

    category = "test"
    output_node = True
    inputs = [String("text", default="")]

    def run(self, text: str) -> Result:
        from graphgen.compat.server import PromptServer

        self.ctx.info(f"info: {text}")
        PromptServer.instance.send_progress_text(f"pack: {text}".encode(), self.ctx.node_id)
        return Result(ui={"text": [text]})


def registry() -> Any:
    reg = make_registry()
    reg.register(Slow, pack="test")
    reg.register(Says, pack="test")
    return reg


@contextmanager
def serve(tmp_path: Path, **options: Any) -> Iterator[ServerThread]:
    engine = Engine(output_dir=tmp_path / "out", input_dir=tmp_path / "in", registry=registry())
    config = ServerConfig(port=0, user_dir=tmp_path / "user", template_dirs=[], **options)
    with ServerThread(engine, config) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with serve(tmp_path_factory.mktemp("server"), max_upload_bytes=64 * 1024) as running:
        yield running


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def slow(tag: str, steps: int = 2, ms: int = 0) -> dict[str, Any]:
    return {"1": {"class_type": "Slow", "inputs": {"tag": tag, "steps": steps, "ms": ms}}}


async def call(session: Any, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text) if text else None
        except ValueError:
            return response.status, text


async def follow(ws: Any, prompt_ids: set[str], seen: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Read messages until every prompt in `prompt_ids` has ended (`executing` with node null)."""
    messages = seen if seen is not None else []
    waiting = set(prompt_ids)
    while waiting:
        msg = await ws.receive(timeout=30)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        messages.append(data)
        if data["type"] == "executing" and data["data"]["node"] is None:
            waiting.discard(data["data"]["prompt_id"])
    return messages


# -- what the editor cannot start without ------------------------------------------------------------------

def test_the_four_startup_endpoints_answer_json(server):
    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            assert await call(s, "GET", "/api/users") == (200, {"storage": "server", "migrated": True})
            assert (await call(s, "GET", "/api/extensions")) == (200, [])
            status, settings = await call(s, "GET", "/api/settings")
            assert status == 200 and isinstance(settings, dict)
            status, info = await call(s, "GET", "/api/object_info")
            assert status == 200 and set(info) == set(server.state.engine.registry.specs())
            for name, entry in info.items():
                assert entry["name"] == name and isinstance(entry["input"]["required"], dict)
                assert len(entry["output"]) == len(entry["output_name"]) == len(entry["output_is_list"])
            # the classic names answer too, and unknown API paths are JSON 404s
            assert (await call(s, "GET", "/object_info/Add"))[1]["Add"]["input"]["required"]["a"][0] == "INT"
            status, body = await call(s, "GET", "/api/no_such_thing")
            assert status == 404 and body["error"]["type"] == "not_found"
            for path in ("/api/system_stats", "/api/features", "/api/jobs?status=pending&limit=5&offset=0",
                         "/api/i18n", "/api/experiment/models", "/api/global_subgraphs", "/api/workflow_templates",
                         "/api/embeddings", "/api/prompt", "/api/queue", "/api/history"):
                status, body = await call(s, "GET", path)
                assert status == 200 and isinstance(body, (dict, list)), path

    run(main())


def test_object_info_uses_comfyui_input_forms(server):
    from graphgen.server.object_info import object_info

    info = object_info(registry().specs())
    scale = info["Scale"]["input"]["required"]
    assert scale["x"] == ["INT", {"step": 1}]
    assert scale["factor"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "round": False}]
    assert info["Text"]["input"]["required"]["text"] == ["STRING", {"default": "", "multiline": True}]
    assert info["Text"]["input"]["optional"]["n"] == ["INT", {"forceInput": True}]
    assert info["Show"]["output_node"] is True and info["Show"]["output"] == []
    assert info["Add"]["input_order"] == {"required": ["a", "b"], "optional": ["c"]}
    default = object_info(Engine().registry.specs())
    sampler = default["KolorsKSampler"]["input"]["required"]
    assert sampler["model"] == ["KOLORS_UNET"] and sampler["seed"][1]["control_after_generate"] is True
    assert isinstance(sampler["scheduler"][0], list) and "euler" in sampler["scheduler"][0]
    assert default["SaveImage"]["output_node"] is True and default["KolorsKSampler"]["category"] == "kolors/sampling"


# -- /prompt errors: ComfyUI's shape, never a 500 ---------------------------------------------------------------

@pytest.mark.parametrize("body, kind", [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b"[1, 2]", "invalid_prompt"),
    (b'{"client_id": "x"}', "no_prompt"),
    (b'{"prompt": []}', "invalid_prompt"),
    (b'{"prompt": {"1": 5}}', "invalid_prompt"),
    (b'{"prompt": {"1": {"inputs": {}}}}', "invalid_prompt"),
    (b'{"prompt": {"1": {"class_type": "Add", "inputs": {"a": 1}}}}', "prompt_no_outputs"),
    (b'{"prompt": {"1": {"class_type": "Show", "inputs": {"value": ["9", 0]}}}}', "prompt_outputs_failed_validation"),
    (b'{"prompt": {"1": {"class_type": "Show", "inputs": {}}}, "extra_data": 3}', "invalid_prompt"),
    (b'{"prompt": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "invalid_json"),
])
def test_malformed_prompts_get_comfyui_shaped_400s(server, body, kind):
    async def main() -> tuple[int, Any]:
        async with aiohttp.ClientSession(server.url) as s:
            return await call(s, "POST", "/prompt", data=body)

    status, answer = run(main())
    assert status == 400, answer
    assert answer["error"]["type"] == kind and answer["error"]["message"] and "node_errors" in answer
    assert "Traceback" not in json.dumps(answer)


def test_unknown_node_types_and_bad_values_are_reported_per_node(server):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 5000}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0], "nope": 1}},
              "3": {"class_type": "KSamplerX", "inputs": {}}}

    async def main() -> tuple[int, Any]:
        async with aiohttp.ClientSession(server.url) as s:
            return await call(s, "POST", "/api/prompt", json={"prompt": prompt})

    status, answer = run(main())
    assert status == 400
    assert answer["error"]["type"] == "invalid_prompt"
    assert answer["error"]["message"] == "Cannot execute because node KSamplerX does not exist."
    errors = answer["node_errors"]
    assert errors["3"]["class_type"] == "KSamplerX" and errors["3"]["errors"][0]["type"] == "unknown_node_type"
    const = errors["1"]["errors"][0]
    assert const["type"] == "value_bigger_than_max" and const["extra_info"]["input_name"] == "value"
    assert const["extra_info"]["received_value"] == 5000 and errors["1"]["dependent_outputs"] == ["2"]
    assert errors["2"]["errors"][0]["type"] == "unknown_input"


# -- safety ---------------------------------------------------------------------------------------------------------

def png_bytes(size: int = 8) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload_form(name: str, data: bytes, **fields: str) -> Any:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


def raw_upload(name: str, data: bytes, **fields: str) -> dict[str, Any]:
    """A multipart body written by hand, so that the file name reaches the server exactly as given."""
    boundary = "graphgen-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
             "Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"]
    for key, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return {"data": body, "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


def test_view_and_upload_cannot_leave_their_folders(server, tmp_path):
    state = server.state
    secret = state.output_dir.parent / "secret.txt"
    secret.write_text("top secret")
    state.output_dir.mkdir(parents=True, exist_ok=True)
    state.input_dir.mkdir(parents=True, exist_ok=True)
    for folder in (state.output_dir, state.input_dir):  # a link leading out of the folder
        (folder / "link").symlink_to(state.output_dir.parent, target_is_directory=True)

    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            for params in [{"filename": "../secret.txt"}, {"filename": "secret.txt", "subfolder": ".."},
                           {"filename": "secret.txt", "subfolder": "../"}, {"filename": "/etc/passwd"},
                           {"filename": "passwd", "subfolder": "/etc"}, {"filename": "secret.txt", "subfolder": "link"},
                           {"filename": "..\\secret.txt"}, {"filename": "secret.txt", "type": "../.."},
                           {"filename": "secret.txt\x00.png"}, {"filename": ""}]:
                status, body = await call(s, "GET", "/api/view", params=params)
                assert status in (400, 403), (params, status)
                assert "top secret" not in json.dumps(body)
            # uploads: traversal in the file name or the subfolder is refused, nothing is written outside
            for name, fields in [("../evil.png", {}), ("sub/../../evil.png", {}), ("evil.png", {"subfolder": "../.."}),
                                 ("evil.png", {"subfolder": "/tmp"}), ("evil.png", {"subfolder": "link"}),
                                 ("evil.png", {"type": "models"})]:
                status, body = await call(s, "POST", "/api/upload/image", **raw_upload(name, png_bytes(), **fields))
                assert status in (400, 403), (name, fields, status, body)
                assert body["error"]["type"]
            assert not list(state.output_dir.parent.rglob("evil.png"))
            assert not (Path("/tmp") / "evil.png").exists() or (Path("/tmp") / "evil.png").stat().st_mtime < time.time() - 60

    run(main())


def test_upload_then_view_sizes_names_and_limits(server):
    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            picture = png_bytes()
            status, body = await call(s, "POST", "/upload/image", data=upload_form("cat.png", picture))
            assert (status, body) == (200, {"name": "cat.png", "subfolder": "", "type": "input"})
            # the same bytes again: the same name; different bytes: a new name; overwrite: the name
            assert (await call(s, "POST", "/upload/image", data=upload_form("cat.png", picture)))[1]["name"] == "cat.png"
            other = png_bytes(16)
            assert (await call(s, "POST", "/upload/image", data=upload_form("cat.png", other)))[1]["name"] == "cat (1).png"
            status, body = await call(s, "POST", "/upload/image",
                                      data=upload_form("cat.png", other, overwrite="true", subfolder="pets"))
            assert body == {"name": "cat.png", "subfolder": "pets", "type": "input"}
            async with s.get("/view", params={"filename": "cat.png", "type": "input"}) as response:
                assert response.status == 200 and response.content_type == "image/png"
                assert await response.read() == picture
            status, _ = await call(s, "GET", "/view", params={"filename": "missing.png", "type": "input"})
            assert status == 404
            # the editor's LoadImage lists the input folder
            info = (await call(s, "GET", "/api/object_info"))[1]
            assert info["Show"]  # the test registry has no LoadImage: checked with the default one below
            # not an image; larger than the limit (64 KiB here); no file field
            status, body = await call(s, "POST", "/upload/image", data=upload_form("x.png", b"not an image"))
            assert status == 400 and body["error"]["type"] == "invalid_image"
            status, body = await call(s, "POST", "/upload/image", data=upload_form("big.png", b"\0" * 300_000))
            assert status == 413 and body["error"]["type"] == "too_large"
            status, body = await call(s, "POST", "/upload/image", data={"type": "input"})
            assert status == 400
            status, body = await call(s, "POST", "/api/prompt", data=b'{"prompt": "' + b"a" * 300_000 + b'"}')
            assert status == 413 and body["error"]["type"] == "too_large"

    run(main())


def test_outputs_are_never_overwritten_by_uploads_and_long_names_are_400(server):
    """Issue 10: `type=output&overwrite=true` replaced a generated image; a 5000-character name answered 500."""
    state = server.state
    state.output_dir.mkdir(parents=True, exist_ok=True)
    generated = state.output_dir / "render_00001_.png"
    generated.write_bytes(png_bytes(8))

    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            status, body = await call(s, "POST", "/upload/image",
                                      data=upload_form("render_00001_.png", png_bytes(12), type="output", overwrite="true"))
            assert status == 200 and body["type"] == "output" and body["name"] != "render_00001_.png"
            assert generated.read_bytes() == png_bytes(8)
            assert (state.output_dir / body["name"]).read_bytes() == png_bytes(12)
            state.temp_dir.mkdir(parents=True, exist_ok=True)
            (state.temp_dir / "preview.png").write_bytes(png_bytes(8))
            status, body = await call(s, "POST", "/upload/image",
                                      data=upload_form("preview.png", png_bytes(12), type="temp", overwrite="true"))
            assert status == 200 and body["name"] != "preview.png"
            assert (state.temp_dir / "preview.png").read_bytes() == png_bytes(8)
            for params in [{"filename": "a" * 5000}, {"filename": "a.png", "subfolder": "b" * 5000},
                           {"filename": "a.png", "subfolder": "/".join(["c" * 300] * 3)}]:
                status, body = await call(s, "GET", "/view", params=params)
                assert status == 400 and body["error"]["type"] == "invalid_filename", (status, body)
            status, body = await call(s, "POST", "/upload/image", data=upload_form("x" * 400 + ".png", png_bytes()))
            assert status == 400

    run(main())


def test_uploads_over_the_pixel_limit_are_refused_before_decoding(server, monkeypatch):
    from test_limits import declared_png

    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            status, body = await call(s, "POST", "/upload/image", data=upload_form("bomb.png", declared_png(12000, 12000)))
            assert status == 413 and body["error"]["type"] == "image_too_large"
            assert "12000x12000 (144.0 megapixels), over the limit of 67.1 megapixels" in body["error"]["message"]
            monkeypatch.setenv("GRAPHGEN_MAX_IMAGE_PIXELS", "100")
            status, body = await call(s, "POST", "/upload/image", data=upload_form("small.png", png_bytes(16)))
            assert status == 413 and "16x16" in body["error"]["message"]

    run(main())
    assert not (server.state.input_dir / "bomb.png").exists()


def test_load_image_offers_uploaded_files(tmp_path):
    from graphgen.server.object_info import node_definition

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(png_bytes())
    (tmp_path / "notes.txt").write_text("x")
    spec = Engine().registry.get("LoadImage")
    image = node_definition(spec, tmp_path)["input"]["required"]["image"]
    assert image == [["sub/a.png"], {"image_upload": True, "tooltip": spec.inputs["image"].description}]


def test_cross_site_requests_are_refused(server):
    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            evil = {"Origin": "http://evil.example"}
            status, body = await call(s, "POST", "/api/prompt", json={"prompt": slow("x")}, headers=evil)
            assert status == 403 and body["error"]["type"] == "forbidden_origin"
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await s.ws_connect("/ws", headers=evil)
            same = {"Origin": server.url}
            status, body = await call(s, "POST", "/api/settings/Comfy.Test", json=1, headers=same)
            assert status == 200
            assert (await call(s, "GET", "/api/settings/Comfy.Test", headers=evil)) == (200, 1)  # reading is fine

    run(main())


def test_server_binds_to_loopback_by_default():
    from graphgen.server.command import _is_loopback

    assert ServerConfig().host == "127.0.0.1"
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.2")


# -- settings and user files -----------------------------------------------------------------------------------

def test_settings_and_userdata_roundtrip_inside_the_user_folder(server):
    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            assert (await call(s, "POST", "/api/settings", json={"Comfy.A": 1, "Comfy.B": "x"}))[0] == 200
            assert (await call(s, "POST", "/api/settings/Comfy.C", json={"deep": [1]}))[0] == 200
            settings = (await call(s, "GET", "/api/settings"))[1]
            assert settings["Comfy.A"] == 1 and settings["Comfy.C"] == {"deep": [1]}
            graph = {"nodes": [], "links": [], "version": 0.4}
            status, body = await call(s, "POST", "/api/userdata/workflows%2Fmine.json?overwrite=true&full_info=true",
                                      data=json.dumps(graph))
            assert status == 200 and body["path"] == "workflows/mine.json" and body["size"] > 0
            status, body = await call(s, "POST", "/api/userdata/workflows%2Fmine.json?overwrite=false", data="{}")
            assert status == 409
            assert (await call(s, "GET", "/api/userdata/workflows%2Fmine.json")) == (200, graph)
            listing = (await call(s, "GET", "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true"))[1]
            assert [item["path"] for item in listing] == ["mine.json"]
            assert (await call(s, "GET", "/api/userdata?dir=workflows"))[1] == ["mine.json"]
            status, body = await call(s, "POST", "/api/userdata/workflows%2Fmine.json/move/workflows%2Fours.json")
            assert (status, body) == (200, "workflows/ours.json")
            assert (await call(s, "GET", "/api/userdata?dir=nothing"))[0] == 404
            for bad in ("..%2F..%2Fescape.json", "%2Fetc%2Fpasswd", "workflows%2F..%2F..%2F..%2Fx"):
                assert (await call(s, "POST", f"/api/userdata/{bad}", data="{}"))[0] in (400, 403), bad
                assert (await call(s, "GET", f"/api/userdata/{bad}"))[0] in (400, 403, 404), bad
            assert (await call(s, "GET", "/api/userdata?dir=..%2F.."))[0] in (400, 403)
            assert (await call(s, "DELETE", "/api/userdata/workflows%2Fours.json"))[0] == 204
        assert (server.state.user_root / "comfy.settings.json").is_file()
        assert not list(server.state.user_root.parent.parent.glob("escape.json"))

    run(main())


# -- the queue ------------------------------------------------------------------------------------------------------

def test_a_client_gets_only_its_own_execution_messages_and_results_land_in_history(server):
    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            a = await s.ws_connect("/ws?clientId=client-a")
            b = await s.ws_connect("/ws")
            hello = json.loads((await b.receive(timeout=10)).data)
            assert hello["type"] == "status" and len(hello["data"]["sid"]) == 32
            status, body = await call(s, "POST", "/prompt", json={"prompt": slow("mine", steps=3), "client_id": "client-a"})
            assert status == 200 and body["node_errors"] == {} and isinstance(body["number"], int)
            pid = body["prompt_id"]
            seen = await follow(a, {pid})
            kinds = [m["type"] for m in seen if m["type"] != "status"]
            assert kinds == ["execution_start", "executing", "progress", "progress", "progress", "executed",
                             "execution_success", "executing"]
            assert seen[0] == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                          "sid": "client-a"}}
            executed = next(m["data"] for m in seen if m["type"] == "executed")
            assert executed == {"node": "1", "display_node": "1", "output": {"values": [{"tag": "mine"}]},
                                "prompt_id": pid}
            await asyncio.sleep(0.2)
            others = []
            while True:
                try:
                    msg = await b.receive(timeout=0.2)
                except asyncio.TimeoutError:
                    break
                others.append(json.loads(msg.data))
            assert others and all(m["type"] == "status" for m in others), others  # queue counts only
            history = (await call(s, "GET", f"/history/{pid}"))[1]
            entry = history[pid]
            assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
            assert entry["outputs"] == {"1": {"values": [{"tag": "mine"}]}}
            assert entry["prompt"][1] == pid and entry["prompt"][4] == ["1"]
            assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_success"]
            assert (await call(s, "GET", "/history/unknown"))[1] == {}
            # the same prompt again comes from the cache, and its output is still reported
            body = (await call(s, "POST", "/prompt", json={"prompt": slow("mine", steps=3), "client_id": "client-a"}))[1]
            again = await follow(a, {body["prompt_id"]})
            assert [m["type"] for m in again if m["type"] != "status"] == [
                "execution_start", "execution_cached", "executed", "execution_success", "executing"]
            job = (await call(s, "GET", f"/api/jobs/{pid}"))[1]
            assert job["status"] == "completed" and job["workflow"]["prompt"] == slow("mine", steps=3)
            await a.close()
            await b.close()

    run(main())


def test_interrupt_stops_the_running_prompt_at_the_next_step_and_the_queue_goes_on(server):
    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            ws = await s.ws_connect("/ws?clientId=interrupter")
            first = (await call(s, "POST", "/prompt", json={"prompt": slow("long", 20_000, 1), "client_id": "interrupter"}))[1]
            second = (await call(s, "POST", "/prompt", json={"prompt": slow("after", 2), "client_id": "interrupter"}))[1]
            third = (await call(s, "POST", "/prompt", json={"prompt": slow("dropped", 2), "client_id": "interrupter"}))[1]
            queue = (await call(s, "GET", "/queue"))[1]
            assert [e[1] for e in queue["queue_pending"]][-2:] == [second["prompt_id"], third["prompt_id"]]
            assert (await call(s, "POST", "/queue", json={"delete": [third["prompt_id"]]}))[0] == 200
            seen: list[dict[str, Any]] = []
            while not any(m["type"] == "progress" for m in seen):
                seen.append(json.loads((await ws.receive(timeout=10)).data))
            began = time.perf_counter()
            assert (await call(s, "POST", "/interrupt", json={"prompt_id": "someone-else"}))[0] == 200
            assert (await call(s, "POST", "/api/interrupt"))[0] == 200
            await follow(ws, {first["prompt_id"], second["prompt_id"]}, seen)
            assert time.perf_counter() - began < 5
            interrupted = [m["data"] for m in seen if m["type"] == "execution_interrupted"]
            assert len(interrupted) == 1 and interrupted[0]["prompt_id"] == first["prompt_id"]
            assert interrupted[0]["node_id"] == "1" and interrupted[0]["node_type"] == "Slow"
            history = (await call(s, "GET", "/history"))[1]
            assert history[first["prompt_id"]]["status"]["status_str"] == "error"
            assert history[second["prompt_id"]]["status"]["status_str"] == "success"
            assert third["prompt_id"] not in history
            jobs = (await call(s, "GET", "/api/jobs?status=completed,failed,cancelled&limit=200&offset=0"))[1]
            statuses = {j["id"]: j["status"] for j in jobs["jobs"]}
            assert statuses[first["prompt_id"]] == "cancelled" and statuses[second["prompt_id"]] == "completed"
            assert jobs["pagination"]["total"] == len(jobs["jobs"])
            await ws.close()

    run(main())


def test_a_failing_node_is_an_execution_error_without_traceback(server):
    prompt = {"1": {"class_type": "Fail", "inputs": {"x": 7}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Slow", "inputs": {"tag": "independent"}}}

    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            ws = await s.ws_connect("/ws?clientId=failing")
            body = (await call(s, "POST", "/prompt", json={"prompt": prompt, "client_id": "failing"}))[1]
            seen = await follow(ws, {body["prompt_id"]})
            errors = [m["data"] for m in seen if m["type"] == "execution_error"]
            assert len(errors) == 1
            assert errors[0]["node_id"] == "1" and errors[0]["node_type"] == "Fail"
            assert errors[0]["exception_message"] == "boom 7" and errors[0]["exception_type"] == "RuntimeError"
            assert errors[0]["traceback"] == []
            assert not any(m["type"] == "execution_success" for m in seen)
            entry = (await call(s, "GET", f"/history/{body['prompt_id']}"))[1][body["prompt_id"]]
            assert entry["status"]["status_str"] == "error"
            assert entry["outputs"] == {"3": {"values": [{"tag": "independent"}]}}  # the other branch still ran
            job = (await call(s, "GET", f"/api/jobs/{body['prompt_id']}"))[1]
            assert job["status"] == "failed" and job["execution_error"]["exception_message"] == "boom 7"
            await ws.close()

    run(main())


def test_history_and_queue_can_be_cleared(server):
    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            ws = await s.ws_connect("/ws?clientId=clearer")
            body = (await call(s, "POST", "/prompt", json={"prompt": slow("to-clear"), "client_id": "clearer"}))[1]
            await follow(ws, {body["prompt_id"]})
            assert body["prompt_id"] in (await call(s, "GET", "/history?max_items=1"))[1]
            assert (await call(s, "POST", "/history", json={"delete": [body["prompt_id"]]}))[0] == 200
            assert body["prompt_id"] not in (await call(s, "GET", "/history"))[1]
            assert (await call(s, "POST", "/api/history", json={"clear": True}))[0] == 200
            assert (await call(s, "GET", "/api/history"))[1] == {}
            assert (await call(s, "POST", "/api/queue", json={"clear": True}))[0] == 200
            status, body = await call(s, "POST", "/api/history", json={"delete": "x"})
            assert status == 400 and body["error"]["type"] == "invalid_request"
            await ws.close()

    run(main())


def test_load_50_prompts_from_5_clients_run_in_order_and_a_vanishing_client_stops_nothing(tmp_path):
    """Five clients queue ten prompts each at once; a sixth queues three and disconnects mid-run."""
    async def client(s: Any, name: str, count: int, numbers: dict[str, Any]) -> list[dict[str, Any]]:
        ws = await s.ws_connect(f"/ws?clientId={name}")
        ids = []
        for index in range(count):
            body = (await call(s, "POST", "/api/prompt",
                               json={"prompt": slow(f"{name}-{index}", steps=3, ms=1), "client_id": name}))[1]
            ids.append(body["prompt_id"])
            numbers[body["prompt_id"]] = body["number"]
        seen = await follow(ws, set(ids))
        await ws.close()
        return [m for m in seen if m["type"] != "status"]

    async def quitter(s: Any, numbers: dict[str, Any]) -> list[str]:
        ws = await s.ws_connect("/ws?clientId=quitter")
        ids = []
        for index in range(3):
            body = (await call(s, "POST", "/api/prompt",
                               json={"prompt": slow(f"quitter-{index}", steps=200, ms=2), "client_id": "quitter"}))[1]
            ids.append(body["prompt_id"])
            numbers[body["prompt_id"]] = body["number"]
        while True:  # leave as soon as one of its prompts is running
            data = json.loads((await ws.receive(timeout=30)).data)
            if data["type"] == "progress":
                break
        await ws.close()
        return ids

    async def main() -> None:
        numbers: dict[str, Any] = {}
        with serve(tmp_path) as server:
            async with aiohttp.ClientSession(server.url) as s:
                began = time.perf_counter()
                results = await asyncio.gather(quitter(s, numbers),
                                               *(client(s, f"client{i}", 10, numbers) for i in range(5)))
                quit_ids, per_client = results[0], results[1:]
                deadline = time.time() + 30
                while (await call(s, "GET", "/prompt"))[1]["exec_info"]["queue_remaining"] and time.time() < deadline:
                    await asyncio.sleep(0.05)
                history = (await call(s, "GET", "/history"))[1]
                elapsed = time.perf_counter() - began
        assert len(numbers) == 53 and len(history) == 53, "nothing lost"
        assert all(entry["status"]["status_str"] == "success" for entry in history.values())
        assert list(history) == sorted(numbers, key=numbers.get), "completed in the order they were queued"
        assert set(quit_ids) <= set(history)
        for index, messages in enumerate(per_client):
            mine = {pid for pid in numbers if history[pid]["outputs"]["1"]["values"][0]["tag"].startswith(f"client{index}-")}
            assert len(mine) == 10
            assert {m["data"]["prompt_id"] for m in messages} == mine, "only its own messages"
            assert sum(m["type"] == "execution_success" for m in messages) == 10
        print(f"53 prompts from 6 clients in {elapsed:.2f} s")

    run(main())


def test_front_puts_a_prompt_before_the_others(server):
    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            ws = await s.ws_connect("/ws?clientId=front")
            blocker = (await call(s, "POST", "/prompt", json={"prompt": slow("blocker", 300, 1), "client_id": "front"}))[1]
            seen: list[dict[str, Any]] = []
            while not any(m["type"] == "progress" for m in seen):  # the blocker is running
                seen.append(json.loads((await ws.receive(timeout=10)).data))
            later = (await call(s, "POST", "/prompt", json={"prompt": slow("later"), "client_id": "front"}))[1]
            urgent = (await call(s, "POST", "/prompt", json={"prompt": slow("urgent"), "client_id": "front", "front": True}))[1]
            assert urgent["number"] < 0
            await follow(ws, {blocker["prompt_id"], later["prompt_id"], urgent["prompt_id"]}, seen)
            order = [m["data"]["prompt_id"] for m in seen if m["type"] == "execution_start"]
            assert order[1:] == [urgent["prompt_id"], later["prompt_id"]]
            await ws.close()

    run(main())


# -- templates --------------------------------------------------------------------------------------------------------

def test_example_workflows_are_templates_that_the_editor_format_maps_back_exactly(tmp_path):
    """Each workflows/*.json becomes an editor graph; converting that graph back gives the same prompt."""
    from graphgen.comfy_ui import ui_to_workflow
    from graphgen.overrides import apply_overrides
    from graphgen.server.templates import TemplateLibrary, default_template_folders
    from graphgen.workflow import load_workflow

    engine = Engine()
    folders = default_template_folders()
    assert folders, "the checkout's workflows/ folder is found"
    library = TemplateLibrary(folders, engine.registry)
    names = library.index()["graphgen"]
    assert sorted(names) == sorted(p.stem for p in folders[0].glob("*.json"))
    for name in names:
        graph = library.load(name)
        assert graph["version"] == 0.4 and graph["nodes"] and graph["links"]
        original = apply_overrides(load_workflow(folders[0] / f"{name}.json"), None, engine.registry)
        back = ui_to_workflow(graph, engine.registry)
        expected = {}
        for node_id, entry in original.nodes.items():
            spec = engine.registry.get(entry.class_type)
            inputs = {}
            for input_name, value in entry.inputs.items():
                if isinstance(value, list):  # a link by name -> by index
                    value = [value[0], engine.registry.get(original.nodes[value[0]].class_type).output_index(value[1])]
                inputs[input_name] = value
            for input_name, item in spec.inputs.items():  # the editor writes every widget's value
                if input_name not in inputs and item.has_default and item.accepts_constant and not item.hidden:
                    inputs[input_name] = item.default
            expected[node_id] = inputs
        assert {n: dict(e.inputs) for n, e in back.nodes.items()} == expected, name
        # and it is valid: the only problems are the files this machine lacks (models, images, data)
        assert {i.code for i in engine.validate(back)} <= {"check_failed"}, name


def test_templates_are_served_and_editor_files_pass_through(tmp_path):
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "mine.json").write_text(json.dumps({"1": {"class_type": "Slow", "inputs": {"tag": "t"}}}))
    (folder / "broken.json").write_text("{nope")
    (folder / "alien.json").write_text(json.dumps({"1": {"class_type": "NotHere", "inputs": {}}}))
    ui = {"last_node_id": 1, "last_link_id": 0, "nodes": [], "links": [], "version": 0.4}
    (folder / "editor.json").write_text(json.dumps(ui))
    (folder / "mine.png").write_bytes(png_bytes())

    async def main() -> None:
        engine = Engine(output_dir=tmp_path / "out", registry=registry())
        with ServerThread(engine, ServerConfig(port=0, user_dir=tmp_path / "user", template_dirs=[folder])) as server:
            async with aiohttp.ClientSession(server.url) as s:
                assert (await call(s, "GET", "/api/workflow_templates"))[1] == {"graphgen": ["editor", "mine"]}
                status, graph = await call(s, "GET", "/api/workflow_templates/graphgen/mine.json")
                assert status == 200 and graph["nodes"][0]["widgets_values"] == ["t", 2, 0]
                assert (await call(s, "GET", "/api/workflow_templates/graphgen/editor.json"))[1] == ui
                async with s.get("/api/workflow_templates/graphgen/mine.png") as response:
                    assert response.status == 200 and await response.read() == png_bytes()
                for missing in ("/api/workflow_templates/graphgen/broken.json", "/api/workflow_templates/other/mine.json",
                                "/api/workflow_templates/graphgen/..%2Fx.json", "/api/workflow_templates/graphgen/mine.txt",
                                "/api/workflow_templates/graphgen/editor.png"):
                    assert (await call(s, "GET", missing))[0] == 404, missing

    run(main())


def test_stopping_the_server_cancels_the_running_prompt(tmp_path):
    async def queue_long(url: str) -> str:
        async with aiohttp.ClientSession(url) as s:
            ws = await s.ws_connect("/ws?clientId=stopper")
            body = (await call(s, "POST", "/prompt", json={"prompt": slow("endless", 100_000, 1), "client_id": "stopper"}))[1]
            while json.loads((await ws.receive(timeout=10)).data)["type"] != "progress":
                pass
            return body["prompt_id"]

    with serve(tmp_path) as server:
        run(queue_long(server.url))
        began = time.perf_counter()
    assert time.perf_counter() - began < 10
    assert not server.state.queue._thread.is_alive()


def test_a_client_chosen_prompt_id_is_used_once_and_a_duplicate_is_refused(server):
    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            ws = await s.ws_connect("/ws?clientId=chooser")
            chosen = "my-id-" + uuid.uuid4().hex
            first = (await call(s, "POST", "/prompt", json={"prompt": slow("a"), "prompt_id": chosen, "client_id": "chooser"}))[1]
            assert first["prompt_id"] == chosen
            await follow(ws, {chosen})
            status, body = await call(s, "POST", "/prompt", json={"prompt": slow("b"), "prompt_id": chosen})
            assert status == 400 and body["error"]["type"] == "duplicate_prompt_id" and body["node_errors"] == {}
            # an invalid prompt gives its id back; a prompt without an id gets a fresh one
            fresh = "my-id-" + uuid.uuid4().hex
            status, _ = await call(s, "POST", "/prompt", json={"prompt": {"1": {"class_type": "Nope"}}, "prompt_id": fresh})
            assert status == 400
            status, body = await call(s, "POST", "/prompt", json={"prompt": slow("c"), "prompt_id": fresh})
            assert status == 200 and body["prompt_id"] == fresh
            await ws.close()

    run(main())


def test_ten_concurrent_prompts_with_one_id_queue_exactly_one(server):
    """Issue 10: all ten ran and /history kept one; now exactly one is accepted, atomically, and kept."""
    import threading
    import urllib.error
    import urllib.request

    chosen = "race-" + uuid.uuid4().hex
    barrier = threading.Barrier(10)
    answers: list[tuple[int, dict[str, Any], str]] = []

    def post(index: int) -> None:
        body = json.dumps({"prompt": slow(f"t{index}", steps=2, ms=5), "prompt_id": chosen}).encode()
        request = urllib.request.Request(server.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answers.append((response.status, json.loads(response.read()), f"t{index}"))
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, json.loads(exc.read()), f"t{index}"))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    accepted = [tag for status, _, tag in answers if status == 200]
    refused = [body for status, body, _ in answers if status == 400]
    assert len(accepted) == 1 and len(refused) == 9, answers
    assert all(body["error"]["type"] == "duplicate_prompt_id" for body in refused)
    deadline = time.monotonic() + 30
    while server.state.queue.finished(chosen) is None and time.monotonic() < deadline:
        time.sleep(0.02)

    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            history = (await call(s, "GET", f"/history/{chosen}"))[1]
            assert history[chosen]["outputs"]["1"]["values"] == [{"tag": accepted[0]}]

    run(main())


def test_dns_rebinding_host_names_are_refused_on_loopback(server, tmp_path):
    """Issue 10: `Host: attacker.example:PORT` with a matching Origin got 200."""
    from graphgen.server.hosts import host_allowed

    port = server.port

    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            rebound = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
            for method, path, kwargs in [("GET", "/api/queue", {}), ("GET", "/api/history", {}),
                                         ("POST", "/api/prompt", {"json": {"prompt": slow("x")}})]:
                status, body = await call(s, method, path, headers=rebound, **kwargs)
                assert status == 403 and body["error"]["type"] == "forbidden_host", (path, status, body)
                assert "--allow-host" in body["error"]["message"]
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await s.ws_connect("/ws", headers=rebound)
            for name in (f"localhost:{port}", f"127.0.0.1:{port}", f"127.1.2.3:{port}", "localhost"):
                status, _ = await call(s, "GET", "/api/queue", headers={"Host": name})
                assert status == 200, name

    run(main())
    with serve(tmp_path, allowed_hosts=["studio.lan"]) as named:
        async def allowed() -> None:
            async with aiohttp.ClientSession(named.url) as s:
                same = {"Host": f"Studio.LAN:{named.port}", "Origin": f"http://studio.lan:{named.port}"}
                assert (await call(s, "GET", "/api/queue", headers=same))[0] == 200
                assert (await call(s, "POST", "/api/prompt", json={"prompt": slow("y")}, headers=same))[0] == 200
                assert (await call(s, "GET", "/api/queue", headers={"Host": "other.lan"}))[0] == 403

        run(allowed())
    assert host_allowed("[::1]:8188", "::1") and not host_allowed(None, "127.0.0.1")
    assert not host_allowed("localhost.attacker.example", "127.0.0.1")
    assert host_allowed("anything.example", "0.0.0.0")  # bound to the network on purpose: any name


def test_fuzzed_prompts_never_get_a_500(server):
    """Structured and byte-level mutations of a valid prompt: each is queued (200) or refused in shape (400)."""
    import random

    rng = random.Random(7)
    base = {"1": {"class_type": "Const", "inputs": {"value": 3}},
            "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 2}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0], "text": "hi"}}}
    odd = [None, True, -1, 2**70, 1.5, float("inf"), "", "x" * 300, [], ["1"], ["1", 0], ["9", 0], ["2", "sum"],
           ["1", 5], [1, 0], {}, {"__value__": [1]}, [[["deep"]]], {"class_type": "Show"}, "Const"]
    bodies: list[bytes] = []
    for _ in range(int(os.environ.get("GRAPHGEN_FUZZ_ROUNDS", "60"))):
        prompt = json.loads(json.dumps(base))
        node = prompt[rng.choice(list(prompt))]
        where = rng.choice(["input", "class_type", "inputs", "node", "extra"])
        if where == "input":
            node["inputs"][rng.choice(["value", "a", "b", "c", "text", "zzz"])] = rng.choice(odd)
        elif where == "class_type":
            node["class_type"] = rng.choice(odd + ["Add", "Slow", "add"])
        elif where == "inputs":
            node["inputs"] = rng.choice(odd)
        elif where == "node":
            prompt[rng.choice(["1", "4", ""])] = rng.choice(odd)
        body: dict[str, Any] = {"prompt": prompt, "client_id": "fuzz"}
        if where == "extra":
            body[rng.choice(["extra_data", "number", "front", "partial_execution_targets", "prompt_id"])] = rng.choice(odd)
        text = json.dumps(body, allow_nan=True).encode()
        bodies.append(text)
        cut = rng.randrange(len(text))  # and a byte-level mutation of the same body
        bodies.append(text[:cut] + bytes([rng.randrange(256)]) + text[cut + 1:])

    async def main() -> list[tuple[int, Any]]:
        async with aiohttp.ClientSession(server.url) as s:
            return [await call(s, "POST", "/api/prompt", data=body) for body in bodies]

    for body, (status, answer) in zip(bodies, run(main()), strict=True):
        assert status in (200, 400), (body, status, answer)
        assert isinstance(answer, dict), (body, answer)
        if status == 400:
            assert answer["error"]["type"] and isinstance(answer["node_errors"], dict), (body, answer)


def test_an_unexpected_failure_is_a_json_500_without_traceback(server, monkeypatch):
    import graphgen.server.app as app_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app_module, "object_info", broken)

    async def main() -> tuple[int, Any]:
        async with aiohttp.ClientSession(server.url) as s:
            return await call(s, "GET", "/api/object_info")

    status, body = run(main())
    assert status == 500 and body["error"]["type"] == "server_error"
    assert "a bug" not in json.dumps(body) and "Traceback" not in json.dumps(body)


def test_partially_valid_prompts_run_the_valid_outputs_and_targets_limit_a_run(server):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 3}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["9", 0]}},
              "4": {"class_type": "Slow", "inputs": {"tag": "partial"}}}

    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            ws = await s.ws_connect("/ws?clientId=partial")
            status, body = await call(s, "POST", "/prompt", json={"prompt": prompt, "client_id": "partial"})
            # ComfyUI's behaviour: the invalid output is reported, the valid ones still run
            assert status == 200 and set(body["node_errors"]) == {"3"}
            assert body["node_errors"]["3"]["errors"][0]["type"] == "link_to_missing_node"
            await follow(ws, {body["prompt_id"]})
            entry = (await call(s, "GET", f"/history/{body['prompt_id']}"))[1][body["prompt_id"]]
            assert set(entry["outputs"]) == {"2", "4"}

            status, body = await call(s, "POST", "/prompt", json={"prompt": prompt, "client_id": "partial",
                                                                  "partial_execution_targets": ["4"]})
            assert status == 200
            seen = await follow(ws, {body["prompt_id"]})
            ran = {m["data"]["node"] for m in seen if m["type"] in ("executing", "executed") and m["data"]["node"]}
            cached = {n for m in seen if m["type"] == "execution_cached" for n in m["data"]["nodes"]}
            assert ran | cached == {"4"}
            for targets in ([], ["3"]):  # nothing to run / only the invalid output
                status, body = await call(s, "POST", "/prompt", json={"prompt": prompt,
                                                                      "partial_execution_targets": targets})
                assert status == 400 and body["error"]["message"], body
            await ws.close()

    run(main())


def test_information_lines_reach_the_editor_as_progress_text_frames(server):
    """`ctx.info` and a pack's `send_progress_text` become ComfyUI's binary frame 3 (node id, text),
    which the editor (1.58) shows on the node; JSON messages go on as before."""
    import struct

    async def main() -> None:
        async with aiohttp.ClientSession(server.url) as s:
            ws = await s.ws_connect("/ws?clientId=reader")
            await ws.receive(timeout=10)  # status
            status, body = await call(s, "POST", "/prompt", json={
                "prompt": {"7": {"class_type": "Says", "inputs": {"text": "bucket 64x64: 2 images, ünïcode"}}},
                "client_id": "reader"})
            assert status == 200, body
            frames, done = [], False
            while not done:
                msg = await ws.receive(timeout=30)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    kind, length = struct.unpack(">II", msg.data[:8])
                    frames.append((kind, msg.data[8:8 + length].decode(), msg.data[8 + length:].decode()))
                else:
                    data = json.loads(msg.data)
                    done = data["type"] == "executing" and data["data"]["node"] is None
            assert frames == [(3, "7", "info: bucket 64x64: 2 images, ünïcode"),
                              (3, "7", "pack: bucket 64x64: 2 images, ünïcode")]
            await ws.close()

    run(main())
