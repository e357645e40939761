"""A classic ComfyUI API client against `graphgen serve`, running Kolors on the tiny models.

It does what ComfyUI's own API examples do: POST an API-format prompt to `/prompt` with a
client id, follow `/ws` until the run ends, read `/history/<id>` and fetch the image from `/view`;
then upload that image and run image-to-image from it.
"""

from __future__ import annotations

import asyncio
import io
import json
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="the server needs aiohttp: pip install 'graphgen[serve]'")

from graphgen import Engine  # noqa: E402
from graphgen.server import ServerConfig, ServerThread  # noqa: E402

LOADERS = {
    "1": {"class_type": "KolorsModelLoader", "inputs": {"path": "models/kolors/Kolors", "precision": "fp32", "device": "cpu"}},
    "2": {"class_type": "KolorsVAELoader", "inputs": {"path": "models/sdxl-vae-fp16-fix", "precision": "fp32", "device": "cpu"}},
    "3": {"class_type": "KolorsTextEncode", "inputs": {"chatglm3_model": ["1", 1], "prompt": "a red fox",
                                                        "negative_prompt": "", "num_images_per_prompt": 1}},
}
TXT2IMG = {
    **LOADERS,
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {"class_type": "KolorsKSampler", "inputs": {"model": ["1", 0], "kolors_embeds": ["3", 0], "latent": ["4", 0],
                                                      "seed": 5, "steps": 2, "cfg": 5.0, "scheduler": "euler", "denoise": 1.0}},
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["2", 0]}},
    "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "api/fox"}},
}


def http(url: str, body: Any = None, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    """urllib, as ComfyUI's example clients use it."""
    payload = json.dumps(body).encode() if body is not None else data
    request = urllib.request.Request(url, data=payload, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


async def run_prompt(server: ServerThread, prompt: dict[str, Any], extra: dict[str, Any] | None = None) -> tuple[str, list]:
    client_id = uuid.uuid4().hex
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(None, lambda: http(
                f"{server.url}/prompt", {"prompt": prompt, "client_id": client_id, "extra_data": extra or {}}))
            prompt_id = answer["prompt_id"]
            assert answer["node_errors"] == {}
            messages = []
            while True:
                msg = await ws.receive(timeout=120)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue  # binary previews
                data = json.loads(msg.data)
                messages.append(data)
                if data["type"] == "executing" and data["data"]["node"] is None and data["data"]["prompt_id"] == prompt_id:
                    return prompt_id, messages


def test_classic_api_client_runs_kolors_and_fetches_the_image(tiny_models, tmp_path):
    from PIL import Image

    from graphgen.server.templates import TemplateLibrary, default_template_folders

    engine = Engine(output_dir=tmp_path / "out", input_dir=tmp_path / "in", models_dir=tiny_models.tutorial_models.parent)
    config = ServerConfig(port=0, user_dir=tmp_path / "user", template_dirs=[])
    editor_graph = TemplateLibrary(default_template_folders(), engine.registry).load("kolors_txt2img")
    with ServerThread(engine, config) as server:
        prompt_id, messages = asyncio.run(run_prompt(server, TXT2IMG, {"extra_pnginfo": {"workflow": editor_graph}}))
        kinds = [m["type"] for m in messages]
        assert kinds[0] == "status" and "execution_start" in kinds and "execution_success" in kinds
        assert kinds.index("execution_success") < len(kinds) - 1 and kinds[-1] == "executing"
        steps = [m["data"] for m in messages if m["type"] == "progress" and m["data"]["node"] == "5"]
        assert [(p["value"], p["max"]) for p in steps] == [(1, 2), (2, 2)]
        executing = [m["data"]["node"] for m in messages if m["type"] == "executing"]
        assert executing == ["1", "2", "3", "4", "5", "6", "7", None]

        history = http(f"{server.url}/history/{prompt_id}")[prompt_id]
        assert history["status"]["status_str"] == "success"
        image = history["outputs"]["7"]["images"][0]
        assert image == {"filename": "fox_00001_.png", "subfolder": "api", "type": "output"}
        png = http(f"{server.url}/view?" + urllib.parse.urlencode(image))
        picture = Image.open(io.BytesIO(png))
        assert picture.size == (64, 64)
        assert json.loads(picture.text["prompt"])["5"]["inputs"]["seed"] == 5
        assert json.loads(picture.text["workflow"]) == editor_graph  # reopens as the editor's graph

        # upload it back, and run image-to-image from the upload (models stay loaded in the engine)
        boundary = "classic-client"
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="fox.png"\r\n'
                "Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
        uploaded = http(f"{server.url}/upload/image", data=body,
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert uploaded == {"name": "fox.png", "subfolder": "", "type": "input"}
        img2img = {**LOADERS,
                   "8": {"class_type": "LoadImage", "inputs": {"image": uploaded["name"], "upload": "image"}},
                   "9": {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["2", 0]}},
                   "10": {"class_type": "KolorsKSampler", "inputs": {
                       "model": ["1", 0], "kolors_embeds": ["3", 0], "latent": ["9", 0], "seed": 6, "steps": 2,
                       "cfg": 5.0, "scheduler": "euler", "denoise": 0.5}},
                   "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["2", 0]}},
                   "12": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}}}
        prompt_id, messages = asyncio.run(run_prompt(server, img2img))
        cached = [n for m in messages if m["type"] == "execution_cached" for n in m["data"]["nodes"]]
        assert cached == ["1", "2", "3"], "loaders and the prompt encoding come from the cache"
        preview = http(f"{server.url}/history/{prompt_id}")[prompt_id]["outputs"]["12"]["images"][0]
        assert preview["type"] == "temp"
        assert Image.open(io.BytesIO(http(f"{server.url}/view?" + urllib.parse.urlencode(preview)))).size == (64, 64)
        object_info = http(f"{server.url}/object_info/LoadImage")
        assert object_info["LoadImage"]["input"]["required"]["image"][0] == ["fox.png"]
