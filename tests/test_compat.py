"""graphgen.compat: ComfyUI's modules exist only while ComfyUI-style packs load and run, behave as
packs expect, never shadow a real ComfyUI, and a missing one fails its pack alone."""

from __future__ import annotations

import json
import sys
import textwrap
import types
import urllib.request
from pathlib import Path

import pytest

from graphgen import Engine, compat
from graphgen.compat import folder_paths
from graphgen.compat.comfy import utils as comfy_utils
from graphgen.compat.comfy.comfy_types import IO
from graphgen.compat.comfy_execution.graph_utils import GraphBuilder, add_graph_prefix, is_link
from graphgen.pickles import UnsafeOrUnreadablePickle
from graphgen.registry import NodeRegistry

CUSTOM_NODES = Path(__file__).parent / "data" / "custom_nodes"
NAMES = ("comfy", "comfy.utils", "comfy_execution.graph_utils", "comfy_api.latest", "folder_paths", "server",
         "nodes")


def test_modules_exist_only_inside_a_scope():
    assert not any(name in sys.modules for name in NAMES)
    with compat.scope():
        with compat.scope():  # nested scopes share one count
            import comfy.utils  # noqa: F401
        import folder_paths as fp
        assert fp is folder_paths and sys.modules["comfy.utils"] is comfy_utils
    assert not any(name in sys.modules for name in NAMES)


def test_scope_puts_back_what_was_there(monkeypatch):
    mine = types.ModuleType("nodes")
    monkeypatch.setitem(sys.modules, "nodes", mine)
    with compat.scope():
        import nodes

        assert nodes is not mine and nodes.MAX_RESOLUTION == 16384
    assert sys.modules["nodes"] is mine


def test_a_real_comfyui_is_never_shadowed(tmp_path, monkeypatch):
    (tmp_path / "comfy").mkdir()
    (tmp_path / "comfy" / "__init__.py").write_text("REAL = True\n")
    (tmp_path / "comfy" / "model_management.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(compat, "_real_comfyui", None)
    with compat.scope():
        import comfy

        assert getattr(comfy, "REAL", False)
        assert "folder_paths" not in sys.modules
    sys.modules.pop("comfy")  # (monkeypatch.delitem would put it back afterwards)


def test_scoped_keeps_the_scope_for_coroutines():
    import asyncio

    async def probe() -> bool:
        await asyncio.sleep(0)
        return "comfy" in sys.modules

    def sync_probe() -> bool:
        return "folder_paths" in sys.modules

    assert asyncio.run(compat.scoped(probe)()) is True
    assert compat.scoped(sync_probe)() is True
    assert "comfy" not in sys.modules


def test_missing_module_fails_that_pack_alone(tmp_path):
    (tmp_path / "needs_sd.py").write_text("import comfy.sd\nNODE_CLASS_MAPPINGS = {}\n")
    (tmp_path / "needs_symbol.py").write_text("from comfy.utils import no_such_helper\nNODE_CLASS_MAPPINGS = {}\n")
    (tmp_path / "fine.py").write_text(textwrap.dedent("""
        import folder_paths
        from comfy.utils import ProgressBar
        class Fine:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ("STRING",)
            FUNCTION = "go"
            def go(self):
                return (folder_paths.get_output_directory(),)
        NODE_CLASS_MAPPINGS = {"Fine": Fine}
    """))
    registry = NodeRegistry()
    registry.load_plugin_dir(tmp_path)
    assert "Fine" in registry
    messages = {p.pack: p.message for p in registry.problems}
    assert set(messages) == {"needs_sd", "needs_symbol"}
    assert "'comfy.sd'" in messages["needs_sd"] and "graphgen does not provide" in messages["needs_sd"]
    assert "'no_such_helper'" in messages["needs_symbol"] and "'comfy.utils'" in messages["needs_symbol"]
    assert "graphgen.compat" not in messages["needs_symbol"]


def test_classic_node_imports_at_run_time_inside_the_scope(tmp_path):
    (tmp_path / "late.py").write_text(textwrap.dedent("""
        class LateImport:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ("STRING",)
            FUNCTION = "go"
            OUTPUT_NODE = True
            def go(self):
                import folder_paths  # imported while the node runs, as some packs do
                return {"ui": {"text": [folder_paths.get_output_directory()]}, "result": ("x",)}
        NODE_CLASS_MAPPINGS = {"LateImport": LateImport}
    """))
    engine = Engine(output_dir=tmp_path / "out", plugins=[tmp_path])
    result = engine.run({"1": {"class_type": "LateImport", "inputs": {}}})
    assert result.status == "success", result.failed
    assert result.ui["1"]["text"] == [str((tmp_path / "out").absolute())]
    assert "folder_paths" not in sys.modules


def test_io_types_compare_as_in_comfyui():
    assert not (IO.ANY != "LATENT") and not (IO.NUMBER != "INT") and IO.INT != "FLOAT"
    assert IO.INT == "INT" and str(IO.FLOAT) == "FLOAT" and {IO.INT: 1}["INT"] == 1


def test_graph_builder_prefixes_links_and_edits():
    graph = GraphBuilder(prefix="p.")
    first = graph.node("Add", a=1, b=2)
    second = graph.node("Add", a=first.out(0), b=first.out(0))
    assert first.id == "p.1" and is_link(second.get_input("a")) and second.get_input("a") == ["p.1", 0]
    assert graph.node("Add", id="1") is first  # an existing id is returned, not replaced
    graph.replace_node_output("1", 0, 7)
    assert second.inputs == {"a": 7, "b": 7}
    second.set_input("b", None)
    second.set_override_display_id("5")
    assert graph.finalize()["p.2"] == {"class_type": "Add", "inputs": {"a": 7}, "override_display_id": "5"}
    graph.remove_node("1")
    assert graph.lookup_node("1") is None and list(graph.finalize()) == ["p.2"]
    assert not is_link(["a", True]) and not is_link(("a", 0)) and not is_link(["a", 0, 1])
    renamed, outputs = add_graph_prefix({"1": {"class_type": "X", "inputs": {"v": ["1", 0]}}}, [["1", 0]], "q.")
    assert renamed == {"q.1": {"class_type": "X", "inputs": {"v": ["q.1", 0]}}} and outputs == [["q.1", 0]]


def test_graph_builders_without_prefix_never_collide():
    prefixes = {GraphBuilder().prefix for _ in range(5)}
    assert len(prefixes) == 5


def test_folder_paths_follow_the_engine(tmp_path):
    models = tmp_path / "models"
    (models / "loras" / "sub").mkdir(parents=True)
    (models / "loras" / "a.safetensors").write_bytes(b"x")
    (models / "loras" / "sub" / "b.pt").write_bytes(b"x")
    (models / "loras" / "notes.txt").write_text("not a model")
    (models / "clip").mkdir()
    (models / "clip" / "enc.safetensors").write_bytes(b"x")
    Engine(output_dir=tmp_path / "out", input_dir=tmp_path / "in", models_dir=models)
    assert folder_paths.models_dir == str(models.absolute())
    assert folder_paths.get_filename_list("loras") == ["a.safetensors", "sub/b.pt"]
    assert folder_paths.get_filename_list("clip") == ["enc.safetensors"]  # ComfyUI's legacy name
    assert folder_paths.get_full_path("loras", "sub/b.pt") == str(models.absolute() / "loras" / "sub" / "b.pt")
    assert folder_paths.get_full_path("loras", "../clip/enc.safetensors") is None
    with pytest.raises(FileNotFoundError, match="--models-dir"):
        folder_paths.get_full_path_or_raise("loras", "missing.safetensors")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "c.ckpt").write_bytes(b"x")
    folder_paths.add_model_folder_path("loras", str(extra))
    assert "c.ckpt" in folder_paths.get_filename_list("loras")
    assert folder_paths.get_output_directory() == str((tmp_path / "out").absolute())
    assert folder_paths.get_temp_directory() == str((tmp_path / "out" / ".temp").absolute())
    assert folder_paths.get_annotated_filepath("x.png [output]") == str((tmp_path / "out").absolute() / "x.png")


def test_save_image_path_counts_on_and_stays_inside(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "img_00007_.png").write_bytes(b"")
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path("run/img", str(tmp_path))
    assert (folder, name, counter, subfolder) == (str(tmp_path / "run"), "img", 8, "run")
    with pytest.raises(ValueError, match="outside the output folder"):
        folder_paths.get_save_image_path("../../etc/x", str(tmp_path))


def test_core_save_image_numbers_and_never_overwrites(tmp_path, monkeypatch):
    import torch
    from PIL import Image

    from graphgen.compat import nodes

    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    saver = nodes.SaveImage()
    images = torch.rand(2, 8, 8, 3)
    first = saver.save_images(images, "pack/out", prompt={"1": {"class_type": "X", "inputs": {}}})
    second = saver.save_images(images[:1], "pack/out")
    names = [item["filename"] for item in first["ui"]["images"] + second["ui"]["images"]]
    assert len(set(names)) == 3 and all(item["subfolder"] == "pack" for item in first["ui"]["images"])
    with Image.open(tmp_path / "pack" / names[0]) as saved:
        assert json.loads(saved.text["prompt"])["1"]["class_type"] == "X"


def test_common_upscale_and_batch_helpers():
    import torch

    samples = torch.rand(2, 3, 8, 16)
    assert comfy_utils.common_upscale(samples, 4, 4, "nearest-exact", "center").shape == (2, 3, 4, 4)
    assert comfy_utils.common_upscale(samples, 32, 16, "bilinear", "disabled").shape == (2, 3, 16, 32)
    assert comfy_utils.repeat_to_batch_size(torch.arange(2), 5).tolist() == [0, 1, 0, 1, 0]
    assert comfy_utils.repeat_to_batch_size(torch.arange(4), 2).tolist() == [0, 1]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_torch_file_never_unpickles_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('pwned').write_text('x')",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UnsafeOrUnreadablePickle, match="never running code") as refused:
        comfy_utils.load_torch_file(str(path), safe_load=False)
    assert "weights_only=False" not in str(refused.value)
    assert not Path("pwned").exists()
    torch = pytest.importorskip("torch")
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "fine.ckpt")
    assert comfy_utils.load_torch_file(str(tmp_path / "fine.ckpt"))["w"].tolist() == [1.0, 1.0]


def test_schema_node_runs_like_a_classic_one(tmp_path):
    engine = Engine(output_dir=tmp_path, plugins=[CUSTOM_NODES])
    spec = engine.registry.get("SchemaScaleInt")
    assert spec.style == "comfyui-schema" and spec.display_name == "Scale an integer"
    assert spec.inputs["factor"].choices == ["x2", "x3"] and spec.inputs["show"].optional
    result = engine.run({"1": {"class_type": "SchemaScaleInt", "inputs": {"value": 7, "factor": "x3", "show": True}},
                         "2": {"class_type": "ExampleSaveText", "inputs": {"value": ["1", 0],
                                                                          "filename_prefix": "s"}}})
    assert result.status == "success", result.failed
    assert result.ui["2"]["text"] == ["21"] and result.ui["1"]["text"] == ["1: 21"]
    errors = engine.validate({"1": {"class_type": "SchemaScaleInt", "inputs": {"value": 7000, "factor": "x2"}}})
    assert errors and "value" in str(errors[0])


def test_pack_routes_are_served_and_send_sync_reaches_clients(tmp_path):
    from graphgen.compat.server import PromptServer
    from graphgen.server import ServerConfig, ServerThread

    engine = Engine(output_dir=tmp_path / "out", plugins=[CUSTOM_NODES])
    config = ServerConfig(port=0, user_dir=tmp_path / "user", template_dirs=[])
    with ServerThread(engine, config) as server:
        with urllib.request.urlopen(server.url + "/example_pack/samplers") as answer:
            body = json.loads(answer.read())
        assert body == {"samplers": ["euler", "euler_cfg_pp", "euler_ancestral"], "output": "out"}
        with urllib.request.urlopen(server.url + "/api/example_pack/samplers") as answer:
            assert json.loads(answer.read()) == body
        sent: list[tuple[str | None, dict]] = []
        hub = server.state.hub
        original = hub.publish
        hub.publish = lambda sid, message: sent.append((sid, message))  # type: ignore[method-assign]
        try:
            PromptServer.instance.attach(hub.publish)
            PromptServer.instance.send_sync("pack.hello", {"n": 1}, sid="abc")
        finally:
            hub.publish = original  # type: ignore[method-assign]
        assert sent == [("abc", {"type": "pack.hello", "data": {"n": 1}})]


def test_every_compat_package_is_installed_under_graphgens_name_only():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    declared = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "graphgen" / "compat").rglob("__init__.py")}
    assert found <= declared
    assert not declared & {"comfy", "comfy_api", "comfy_execution", "server", "folder_paths", "nodes"}


def test_model_management_answers_device_questions_without_a_run():
    import torch

    from graphgen.compat.comfy import model_management as mm

    device = mm.get_torch_device()
    assert isinstance(device, torch.device)
    assert mm.get_torch_device_name(torch.device("cpu")) == "cpu"
    assert mm.get_total_memory(torch.device("cpu")) > mm.get_free_memory(torch.device("cpu")) > 0
    assert mm.OOM_EXCEPTION is torch.cuda.OutOfMemoryError and mm.total_ram > 0
    assert mm.InterruptProcessingException.__mro__[1] is BaseException  # not swallowed by `except Exception`
    mm.throw_exception_if_processing_interrupted()  # outside a run: nothing to interrupt
    assert not mm.processing_interrupted()


def test_interrupt_inside_a_node_cancels_the_run(tmp_path):
    (tmp_path / "stopper.py").write_text(textwrap.dedent("""
        import comfy.model_management
        from comfy.utils import ProgressBar

        class Stopper:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"steps": ("INT", {"default": 5})}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "go"
            OUTPUT_NODE = True
            def go(self, steps):
                bar = ProgressBar(steps)
                bar.update(1)
                comfy.model_management.interrupt_current_processing()
                bar.update(1)  # a progress update honours the cancel
                raise AssertionError("not reached")
        NODE_CLASS_MAPPINGS = {"Stopper": Stopper}
    """))
    engine = Engine(output_dir=tmp_path / "out", plugins=[tmp_path])
    events: list = []
    result = engine.run({"1": {"class_type": "Stopper", "inputs": {"steps": 5}}}, on_event=events.append)
    assert result.status == "cancelled"
    assert [(e.value, e.total) for e in events if e.kind == "node_progress"] == [(1, 5), (2, 5)]


def test_schema_nodes_lazy_lists_validation_fingerprint_and_expansion(tmp_path):
    (tmp_path / "v3_pack.py").write_text(textwrap.dedent("""
        from comfy_api.latest import ComfyExtension, io
        from comfy_execution.graph_utils import GraphBuilder

        STATE = {"version": 1}

        class Boom(io.ComfyNode):
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="V3Boom", inputs=[io.Int.Input("x", default=0)],
                                 outputs=[io.Int.Output()])
            @classmethod
            def execute(cls, x):
                raise RuntimeError("the lazy branch ran")

        class Twice(io.ComfyNode):
            '''Expands into two V3Add nodes.'''
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="V3Twice", enable_expand=True, inputs=[io.Int.Input("x", default=0)],
                                 outputs=[io.Int.Output()])
            @classmethod
            def execute(cls, x):
                g = GraphBuilder()
                a = g.node("V3Add", a=x, b=1)
                b = g.node("V3Add", a=a.out(0), b=1)
                return io.NodeOutput(b.out(0), expand=g.finalize())

        class Add(io.ComfyNode):
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="V3Add", inputs=[io.Int.Input("a", default=0), io.Int.Input("b", default=0)],
                                 outputs=[io.Int.Output()])
            @classmethod
            def validate_inputs(cls, a, b):
                return True if b != 13 else "b may not be 13"
            @classmethod
            def fingerprint_inputs(cls, a, b):
                return STATE["version"]  # outside state: a change makes it run again
            @classmethod
            def execute(cls, a, b):
                return io.NodeOutput(a + b)

        class Pick(io.ComfyNode):
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="V3Pick", inputs=[io.Boolean.Input("first"),
                                 io.Int.Input("a", lazy=True), io.Int.Input("b", lazy=True)],
                                 outputs=[io.Int.Output()])
            @classmethod
            def check_lazy_status(cls, first, a=None, b=None):
                return ["a"] if first else ["b"]
            @classmethod
            def execute(cls, first, a=None, b=None):
                return io.NodeOutput(a if first else b)

        class Spread(io.ComfyNode):
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="V3Spread", inputs=[io.Int.Input("x")],
                                 outputs=[io.Int.Output(is_output_list=True)])
            @classmethod
            def execute(cls, x):
                return io.NodeOutput([x, x + 1, x + 2])

        class Total(io.ComfyNode):
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="V3Total", is_input_list=True, is_output_node=True,
                                 inputs=[io.Int.Input("values")], outputs=[])
            @classmethod
            async def execute(cls, values):
                return io.NodeOutput(ui={"total": [sum(values)]})

        class Ext(ComfyExtension):
            async def get_node_list(self):
                return [Boom, Twice, Add, Pick, Spread, Total]

        async def comfy_entrypoint():
            return Ext()
    """))
    engine = Engine(output_dir=tmp_path / "out", plugins=[tmp_path])
    assert not engine.registry.problems
    workflow = {"1": {"class_type": "V3Twice", "inputs": {"x": 5}},          # 7
                "2": {"class_type": "V3Boom", "inputs": {"x": 0}},
                "3": {"class_type": "V3Pick", "inputs": {"first": True, "a": ["1", 0], "b": ["2", 0]}},
                "4": {"class_type": "V3Spread", "inputs": {"x": ["3", 0]}},   # 7, 8, 9
                "5": {"class_type": "V3Add", "inputs": {"a": ["4", 0], "b": 1}},  # 8, 9, 10
                "6": {"class_type": "V3Total", "inputs": {"values": ["5", 0]}}}
    result = engine.run(workflow)
    assert result.status == "success", result.failed
    assert result.ui["6"]["total"] == [27] and "2" not in result.executed
    assert "5" not in engine.run(workflow).executed  # same inputs, same outside state: cached
    sys.modules[engine.registry.get("V3Add").source.__module__].STATE["version"] = 2
    assert "5" in engine.run(workflow).executed
    workflow["5"]["inputs"]["b"] = 13
    issues = engine.validate(workflow)
    assert issues and "b may not be 13" in str(issues[0])


def test_nodes_module_offers_the_built_in_core_nodes(tmp_path):
    (tmp_path / "uses_core.py").write_text(textwrap.dedent("""
        import nodes
        from nodes import MAX_RESOLUTION, EmptyLatentImage

        class LatentShape(EmptyLatentImage):  # packs subclass core nodes
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"side": ("INT", {"default": 64, "max": MAX_RESOLUTION})}}
            RETURN_TYPES = ("STRING",)
            FUNCTION = "shape"
            OUTPUT_NODE = True
            def shape(self, side):
                latent = self.generate(side, side, 2)[0]  # ComfyUI's method name
                same = nodes.NODE_CLASS_MAPPINGS["EmptyLatentImage"]().generate(width=side, height=side, batch_size=1)[0]
                return {"ui": {"text": [str(tuple(latent["samples"].shape)), str(tuple(same["samples"].shape))]},
                        "result": ("ok",)}
        CORE = nodes.NODE_CLASS_MAPPINGS
        NODE_CLASS_MAPPINGS = {"LatentShape": LatentShape}
    """))
    (tmp_path / "needs_model_code.py").write_text("from nodes import common_ksampler\nNODE_CLASS_MAPPINGS = {}\n")
    engine = Engine(output_dir=tmp_path / "out", plugins=[tmp_path])
    assert [p.pack for p in engine.registry.problems] == ["needs_model_code"]
    assert "'common_ksampler'" in engine.registry.problems[0].message
    result = engine.run({"1": {"class_type": "LatentShape", "inputs": {"side": 64}}})
    assert result.status == "success", result.failed
    assert result.ui["1"]["text"] == ["(2, 4, 8, 8)", "(1, 4, 8, 8)"]
    mappings = sys.modules[engine.registry.get("LatentShape").source.__module__].CORE
    assert "VAEDecode" in mappings and "NotANode" not in mappings and mappings.get("NotANode") is None
    assert mappings["EmptyLatentImage"].INPUT_TYPES()["required"]["width"][0] == "INT"
