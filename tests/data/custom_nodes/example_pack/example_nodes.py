import os

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
from aiohttp import web
from comfy.comfy_types import IO
from comfy.utils import ProgressBar
from comfy_execution.graph_utils import GraphBuilder
from server import PromptServer

import nodes

MAX_STEPS = nodes.MAX_RESOLUTION  # packs read core constants at import


@PromptServer.instance.routes.get("/example_pack/samplers")
async def list_samplers(request):
    return web.json_response({"samplers": comfy.samplers.KSampler.SAMPLERS[:3],
                              "output": os.path.basename(folder_paths.get_output_directory())})


class ExampleLazySwitch:
    """Passes one of two inputs on; the other branch is never evaluated."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"switch": ("BOOLEAN", {"default": True}),
                             "on_true": (IO.ANY, {"lazy": True}),
                             "on_false": (IO.ANY, {"lazy": True})}}

    RETURN_TYPES = (IO.ANY,)
    FUNCTION = "switch_value"
    CATEGORY = "example"

    def check_lazy_status(self, switch, on_true=None, on_false=None):
        if switch and on_true is None:
            return ["on_true"]
        if not switch and on_false is None:
            return ["on_false"]
        return []

    def switch_value(self, switch, on_true=None, on_false=None):
        return (on_true if switch else on_false,)


class ExampleExplode:
    """Fails when it runs: wired to the branch a lazy switch must not evaluate."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "explode"
    CATEGORY = "example"

    def explode(self, value):
        raise RuntimeError("ExampleExplode ran: the lazy switch evaluated the wrong branch")


class ExampleMakeList:
    """0, 1, ... count-1 as a list output."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3, "min": 1, "max": 100})}}

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make"
    CATEGORY = "example"

    def make(self, count):
        return (list(range(count)),)


class ExampleAdd:
    """a + b (fed a list, it runs once per item)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0, "min": -10**9, "max": 10**9}),
                             "b": ("INT", {"default": 1, "min": -10**9, "max": 10**9})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "add"
    CATEGORY = "example"

    def add(self, a, b):
        comfy.model_management.throw_exception_if_processing_interrupted()
        return (a + b,)


class ExampleSumList:
    """The sum of a list of integers (takes the whole list at once)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "total"
    CATEGORY = "example"

    def total(self, values):
        return (sum(values),)


class ExampleLoop:
    """Adds `step` to `value`, `times` times, by expanding into ExampleAdd nodes and itself."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -10**9, "max": 10**9}),
                             "times": ("INT", {"default": 3, "min": 0, "max": 100}),
                             "step": ("INT", {"default": 1, "min": -1000, "max": 1000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "loop"
    CATEGORY = "example"

    def loop(self, value, times, step):
        if times <= 0:
            return (value,)
        graph = GraphBuilder()
        added = graph.node("ExampleAdd", a=value, b=step)
        rest = graph.node("ExampleLoop", value=added.out(0), times=times - 1, step=step)
        return {"result": (rest.out(0),), "expand": graph.finalize()}


class ExampleProgress:
    """Counts to `steps`, reporting progress through comfy.utils.ProgressBar."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -10**9, "max": 10**9}),
                             "steps": ("INT", {"default": 4, "min": 1, "max": MAX_STEPS})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "count"
    CATEGORY = "example"

    def count(self, value, steps, unique_id=None):
        bar = ProgressBar(steps, node_id=unique_id)
        for _ in range(steps):
            bar.update(1)
        PromptServer.instance.send_sync("example_pack.counted", {"node": unique_id, "steps": steps})
        return (value,)


class ExampleSaveText:
    """Writes the value as a numbered text file in the output folder and shows it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY, {}), "filename_prefix": ("STRING", {"default": "example"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = "example"

    def save(self, value, filename_prefix):
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory())
        os.makedirs(folder, exist_ok=True)
        filename = f"{name}_{counter:05}_.txt"
        with open(os.path.join(folder, filename), "x", encoding="utf-8") as handle:
            handle.write(str(value))
        return {"ui": {"text": [str(value)], "files": [{"filename": filename, "subfolder": subfolder,
                                                          "type": "output"}]}}


NODE_CLASS_MAPPINGS = {
    "ExampleLazySwitch": ExampleLazySwitch,
    "ExampleExplode": ExampleExplode,
    "ExampleMakeList": ExampleMakeList,
    "ExampleAdd": ExampleAdd,
    "ExampleSumList": ExampleSumList,
    "ExampleLoop": ExampleLoop,
    "ExampleProgress": ExampleProgress,
    "ExampleSaveText": ExampleSaveText,
}
NODE_DISPLAY_NAME_MAPPINGS = {name: name.replace("Example", "Example ") for name in NODE_CLASS_MAPPINGS}
