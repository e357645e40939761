"""graphgen: a ComfyUI-style node-graph engine for diffusion workflows.

The engine knows nothing about diffusion: node packs (the built-in Kolors and LoRA packs in
`graphgen_nodes`, installed packs, plugin folders) bring the nodes. Importing graphgen never
imports torch.
"""

from graphgen.builder import WorkflowBuilder
from graphgen.context import Cancelled, EngineSettings, NodeContext
from graphgen.engine import Engine
from graphgen.errors import Issue, NodeError, WorkflowError
from graphgen.executor import RunResult
from graphgen.node import Bool, Choice, Float, Input, InputAlias, Int, Link, Node, Output, Result, String
from graphgen.registry import NodeRegistry, default_registry
from graphgen.workflow import Workflow, load_workflow

__version__ = "0.1.0"

__all__ = [
    "Engine", "load_workflow", "Workflow", "WorkflowBuilder", "RunResult", "WorkflowError", "Issue",
    "NodeError", "Node", "Result", "Output", "Input", "Int", "Float", "String", "Bool", "Choice", "Link",
    "InputAlias", "NodeContext", "EngineSettings", "Cancelled", "NodeRegistry", "default_registry", "__version__",
]
