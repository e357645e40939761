"""End to end in a real browser: ComfyUI's editor, served by `graphgen serve`, runs Kolors on the tiny models.

Headless Chromium (Debian's `chromium` package) is driven over the Chrome DevTools protocol with
aiohttp's websocket client: the editor opens our `kolors_txt2img` template, every graphgen node type
must be in its node list, the workflow is queued through the page's own `app.queuePrompt` (the Run
button's code path: the page converts its graph to an API prompt and posts it with its client id),
and the result image must appear on the SaveImage node. A screenshot and the browser's console log
are saved under `artifacts/test_server_browser/` (and the test's tmp folder).

Skipped, saying why, when chromium or the `comfyui-frontend-package` is not installed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="the server needs aiohttp: pip install 'graphgen[serve]'")

from graphgen import Engine  # noqa: E402
from graphgen.server import ServerConfig, ServerThread  # noqa: E402
from graphgen.server.frontend import find_frontend  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "test_server_browser"
CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if (path := shutil.which(name))), None)
TIMEOUT = 150


class DevTools:
    """The smallest Chrome DevTools protocol client: commands by id, events kept in a list."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            future = self.waiting.pop(data.get("id", -1), None)
            if future is not None:
                future.set_result(data)
            else:
                self.events.append(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, 60)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                value = await self.eval(expression)
                if value:
                    return value
            await asyncio.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def console(self) -> list[str]:
        lines = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                lines.append(f"console.{params.get('type')}: {text}")
            elif event.get("method") == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                lines.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif event.get("method") == "Log.entryAdded":
                entry = params.get("entry", {})
                lines.append(f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}")
        return lines

    def responses(self) -> list[tuple[int, str]]:
        return [(e["params"]["response"]["status"], e["params"]["response"]["url"])
                for e in self.events if e.get("method") == "Network.responseReceived"]


def launch_chromium(profile: Path) -> tuple[subprocess.Popen[bytes], int]:
    assert CHROMIUM is not None
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-extensions", "--disable-sync", "--no-first-run",
         "--no-default-browser-check", "--mute-audio", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1600,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"chromium exited: {process.stderr.read().decode(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError, ValueError, IndexError):
            return process, int(port_file.read_text().split()[0])
        time.sleep(0.1)
    process.kill()
    raise AssertionError("chromium did not open its DevTools port in 30 s")


def page_socket(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
        targets = json.loads(response.read())
    return next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")


SET_WIDGETS = """(() => {
  const set = (type, name, value) => {
    const node = app.graph._nodes.find(n => n.type === type);
    const widget = node.widgets.find(w => w.name === name);
    widget.value = value;
    return widget.value;
  };
  return [set('EmptyLatentImage', 'width', 64), set('EmptyLatentImage', 'height', 64),
          set('KolorsKSampler', 'steps', 2), set('KolorsTextEncode', 'prompt', 'a red fox in the snow')];
})()"""
RESULT_IMAGE = """(() => {
  const node = app.graph._nodes.find(n => n.type === 'SaveImage');
  const img = node && node.imgs && node.imgs[0];
  return img && img.complete && img.naturalWidth ? {src: img.src, width: img.naturalWidth, height: img.naturalHeight} : null;
})()"""
SHOW_GRAPH = """(() => {
  app.canvas.ds.scale = 0.75; app.canvas.ds.offset = [100, 120]; app.canvas.setDirty(true, true); return true;
})()"""


async def drive_editor(url: str, profile: Path, out: Path) -> dict[str, Any]:
    process, port = launch_chromium(profile)
    report: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(page_socket(port), max_msg_size=0) as ws:
            tools = DevTools(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await tools.send(f"{domain}.enable")
            try:
                await tools.send("Page.navigate", url=f"{url}/?template=kolors_txt2img&source=graphgen")
                types = await tools.wait_for(
                    "window.app && app.graph && app.graph._nodes.length === 7 && app.graph._nodes.map(n => n.type)",
                    60, "the editor to open the kolors_txt2img template")
                report["template_nodes"] = types
                report["registered"] = await tools.eval("Object.keys(LiteGraph.registered_node_types)")
                report["categories"] = await tools.eval(
                    "Object.fromEntries(Object.entries(LiteGraph.registered_node_types).map(([k, v]) => [k, v.category]))")
                report["widgets"] = await tools.eval(SET_WIDGETS)
                report["queued"] = await tools.eval("app.queuePrompt(0, 1)")
                report["image"] = await tools.wait_for(RESULT_IMAGE, 90, "the result image on the SaveImage node")
                report["client_id"] = await tools.eval("window.name")
                await tools.eval(SHOW_GRAPH)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await tools.screenshot(out / "editor_result.png")
                report["console"] = tools.console()
                report["responses"] = tools.responses()
                (out / "console.log").write_text("\n".join(report["console"]) + "\n", encoding="utf-8")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    return report


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium); "
                                             "the browser test of the editor needs it")
@pytest.mark.skipif(find_frontend() is None, reason="ComfyUI's editor is not installed: "
                                                    "pip install 'graphgen[serve]' (comfyui-frontend-package)")
def test_comfyui_editor_runs_a_kolors_template_on_the_tiny_models(tiny_models, tmp_path):
    from PIL import Image

    out = tmp_path / "artifacts"
    out.mkdir()
    engine = Engine(output_dir=tmp_path / "out", input_dir=tmp_path / "in",
                    models_dir=tiny_models.tutorial_models.parent)  # the template's models/... paths resolve here
    errors = _Errors()
    logging.getLogger("graphgen.server").addHandler(errors)
    began = time.perf_counter()
    try:
        with ServerThread(engine, ServerConfig(port=0, user_dir=tmp_path / "user")) as server:
            report = asyncio.run(asyncio.wait_for(drive_editor(server.url, tmp_path / "profile", out), TIMEOUT))
            jobs = server.state.queue.history()
    finally:
        logging.getLogger("graphgen.server").removeHandler(errors)
        if out.exists():
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for item in out.iterdir():
                shutil.copy2(item, ARTIFACTS / item.name)
    elapsed = time.perf_counter() - began

    # the editor knows every graphgen node, in our categories
    missing = sorted(set(engine.registry.names()) - set(report["registered"]))
    assert not missing, f"node types missing from the editor's node list: {missing}"
    assert report["categories"]["KolorsKSampler"] == "kolors/sampling"
    assert sorted(report["template_nodes"]) == sorted(["KolorsModelLoader", "KolorsVAELoader", "KolorsTextEncode",
                                                       "EmptyLatentImage", "KolorsKSampler", "VAEDecode", "SaveImage"])
    assert report["widgets"] == [64, 64, 2, "a red fox in the snow"]

    # the page posted the prompt itself, over its own websocket session, and showed the result
    assert len(jobs) == 1 and jobs[0].status == "completed"
    job = jobs[0]
    assert job.client_id == report["client_id"] and job.client_id
    assert job.prompt["4"]["inputs"] == {"width": 64, "height": 64, "batch_size": 1}
    assert job.prompt["3"]["inputs"]["prompt"] == "a red fox in the snow"
    image = report["image"]
    assert (image["width"], image["height"]) == (64, 64)
    saved = job.outputs["7"]["images"][0]
    assert f"filename={saved['filename']}" in image["src"] and "/api/view" in image["src"]
    png = Image.open(tmp_path / "out" / saved["subfolder"] / saved["filename"])
    assert len(json.loads(png.text["workflow"])["nodes"]) == 7  # the editor's graph rides along in the PNG

    # graphgen's own editor-format converter reads the graph the page saved exactly as the page did
    from graphgen.comfy_ui import ui_to_workflow

    converted = ui_to_workflow(job.extra_data["extra_pnginfo"]["workflow"], engine.registry)
    assert {n: (e.class_type, dict(e.inputs)) for n, e in converted.nodes.items()} == \
        {n: (e["class_type"], e["inputs"]) for n, e in job.prompt.items()}

    # nothing failed on the server side
    assert not errors.records, errors.records
    assert not [r for r in report["responses"] if r[0] >= 500], report["responses"]
    assert (ARTIFACTS / "editor_result.png").is_file()
    print(f"editor loaded, ran the template and showed the image in {elapsed:.1f} s; "
          f"screenshot: {ARTIFACTS / 'editor_result.png'}")
