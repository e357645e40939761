"""An example ComfyUI custom-node pack, written the way pack authors write them.

It imports ComfyUI's modules at load time (folder_paths, comfy.utils, comfy.samplers,
comfy_execution.graph_utils, server, nodes) and declares a lazy switch, list nodes, a loop that
expands itself, a progress bar, a text saver and a web route. graphgen's tests run it from
`graphgen run --plugins` and from `graphgen serve`.
"""

from .example_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
