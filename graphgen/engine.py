"""`Engine`: the small face that ties the registry, validation, the cache and the executor together.

    import graphgen

    engine = graphgen.Engine(output_dir="out")
    workflow = graphgen.load_workflow("workflows/kolors_txt2img.json")
    result = engine.run(workflow, overrides={"14.seed": 7}, on_event=print)
    result.executed, result.cached, result.ui

One Engine keeps its output cache and its loaded models across runs: an app that calls `run`
again with a changed seed re-runs only the nodes that depend on the seed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from graphgen import compat
from graphgen.cache import OutputCache
from graphgen.context import EngineSettings
from graphgen.events import Event, ignore_event
from graphgen.executor import Executor, RunResult, settings_for_run
from graphgen.files import file_identity
from graphgen.models import ModelStore
from graphgen.overrides import apply_overrides
from graphgen.registry import NodeRegistry, default_registry
from graphgen.validation import PreparedWorkflow, validate
from graphgen.workflow import Workflow, load_workflow

WorkflowSource = Workflow | str | Path | dict[str, Any] | bytes
PREPARED_MEMO_SIZE = 32


class Engine:
    """Loads node packs, validates and runs workflows, and keeps caches between runs.

    Args:
        output_dir: Where output nodes write files.
        input_dir: Where image loaders find relative file names.
        models_dir: A models folder (ComfyUI layout) for loaders that take model names.
        plugins: Extra plugin folders to load node packs from.
        registry: Use this registry instead of building the default one.
        cache_entries: Most node outputs kept in the cache.
        cache_bytes: Memory budget of the output cache (estimated from tensor sizes).
        resource_bytes: RAM budget of the model store: bytes of loaded models kept (None: no limit).
        vram_bytes: VRAM budget: bytes of model weights on the accelerator (None: the card's memory
            minus 3 GB, or `GRAPHGEN_GPU_BUDGET_GB`).
    """

    def __init__(
        self,
        *,
        output_dir: str | os.PathLike[str] = "output",
        input_dir: str | os.PathLike[str] = "input",
        models_dir: str | os.PathLike[str] | None = None,
        plugins: Iterable[str | os.PathLike[str]] = (),
        registry: NodeRegistry | None = None,
        cache_entries: int = 10_000,
        cache_bytes: int | None = None,
        resource_bytes: int | None = None,
        vram_bytes: int | None = None,
    ) -> None:
        self.settings = EngineSettings(output_dir=Path(output_dir), input_dir=Path(input_dir),
                                       models_dir=Path(models_dir) if models_dir else None)
        # ComfyUI packs read `folder_paths` at import (before any run): they see this Engine's folders.
        compat.use_settings(self.settings)
        self.registry = registry if registry is not None else default_registry(plugins)
        if registry is not None:
            for directory in plugins:
                self.registry.load_plugin_dir(directory)
        self.cache = OutputCache(max_entries=cache_entries, max_bytes=cache_bytes)
        self.resources = ModelStore(max_bytes=resource_bytes, vram_budget=vram_bytes)
        self._executor = Executor(self.cache, self.settings, self.resources, self.registry)
        self._cancel = threading.Event()
        self._run_lock = threading.Lock()
        self._prepared: OrderedDict[str, PreparedWorkflow] = OrderedDict()

    def prepare(self, workflow: WorkflowSource, overrides: Mapping[str, Any] | None = None, *,
                partial: bool = False) -> PreparedWorkflow:
        """Load, apply overrides and validate; raises `WorkflowError` listing every problem.

        With `partial`, output nodes that cannot run are left out (their problems in
        `PreparedWorkflow.issues`) while the others run, as ComfyUI's server does; it raises only
        when no output node is valid.

        ComfyUI editor (UI) workflows, and PNGs carrying a workflow, are converted here with this
        engine's node schemas. Validations are memoized by content (an app re-running the same workflow pays for the
        check once), unless a node's allowed values are computed at validation time.
        """
        key = self._prepare_key(workflow, overrides)
        if key is not None and partial:
            key += ":partial"
        if key is not None and key in self._prepared:
            self._prepared.move_to_end(key)
            return self._prepared[key]
        prepared = validate(apply_overrides(load_workflow(workflow, self.registry), overrides, self.registry),
                            self.registry, self.settings, partial=partial)
        if key is not None and not prepared.has_dynamic_choices:
            self._prepared[key] = prepared
            while len(self._prepared) > PREPARED_MEMO_SIZE:
                self._prepared.popitem(last=False)
        return prepared

    def _prepare_key(self, workflow: WorkflowSource, overrides: Mapping[str, Any] | None) -> str | None:
        if isinstance(workflow, Workflow):
            content: Any = workflow.model_dump(by_alias=True)
        elif isinstance(workflow, dict):
            content = workflow
        elif isinstance(workflow, (str, Path)) and not str(workflow).lstrip().startswith(("{", "[")):
            content = file_identity(workflow)
            if content[1] != "file":  # missing, unreadable or a NUL in the name: not memoized
                return None
        elif isinstance(workflow, (str, bytes)):
            content = workflow
        else:
            return None
        # Value types matter: command-line text is converted by input type, Python values are not.
        given = sorted((str(k), type(v).__name__, v) for k, v in (overrides or {}).items())
        # The settings too: declared file checks answer by its folders and `confine_paths`.
        text = repr((content, given, self.registry.generation, self.settings))
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    def validate(self, workflow: WorkflowSource, overrides: Mapping[str, Any] | None = None) -> list[Any]:
        """Every problem with a workflow (an empty list when it can run)."""
        from graphgen.errors import WorkflowError

        try:
            self.prepare(workflow, overrides)
        except WorkflowError as exc:
            return exc.issues
        return []

    def run(
        self,
        workflow: WorkflowSource | PreparedWorkflow,
        *,
        overrides: Mapping[str, Any] | None = None,
        on_event: Callable[[Event], None] | None = None,
        force: Iterable[str] = (),
        outputs: Iterable[str] | None = None,
        use_cache: bool = True,
        output_dir: str | os.PathLike[str] | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
    ) -> RunResult:
        """Run a workflow.

        Args:
            workflow: A workflow (path, JSON text, dict, `Workflow`) or a prepared one.
            overrides: `{"NODE.INPUT": value, "PARAM": value}`.
            on_event: Called with each `graphgen.events.Event`, in the running thread.
            force: Node ids to re-run even when their results are cached.
            outputs: Output node ids to produce (default: all output nodes).
            use_cache: False runs every needed node and leaves the cache untouched.
            output_dir: Where this run's output nodes write (default: the engine's folder);
                per run, so the engine's settings are never rewritten.
            extra_pnginfo: What ComfyUI's hidden EXTRA_PNGINFO input holds (default: the workflow).

        Returns:
            The `RunResult`. A failing node does not raise: see `result.failed`.

        Raises:
            WorkflowError: the workflow is invalid (nothing ran).
        """
        prepared = workflow if isinstance(workflow, PreparedWorkflow) else self.prepare(workflow, overrides)
        emit = on_event or ignore_event
        # A run with ComfyUI-style nodes keeps ComfyUI's modules importable throughout (one scope,
        # rather than one per node call).
        with self._run_lock, compat.scope_for(prepared.specs()):
            self._cancel.clear()
            return self._executor.run(prepared, emit=emit, cancel_event=self._cancel, force=force,
                                      targets=outputs, use_cache=use_cache,
                                      settings=settings_for_run(self.settings, output_dir),
                                      extra_pnginfo=extra_pnginfo)

    def cancel(self) -> None:
        """Ask the running workflow to stop at the next node or step. Safe from any thread."""
        self._cancel.set()

    def clear_cache(self) -> None:
        """Forget cached node outputs (loaded models stay: see `free_resources`)."""
        self.cache.clear()

    @property
    def models(self) -> ModelStore:
        """The model store every family pack loads through (the same object as `resources`)."""
        return self.resources

    def free_resources(self) -> int:
        """Drop shared loaded models (and cached outputs that hold them) and give their memory back,
        the accelerator's cached blocks included; returns how many resources were dropped."""
        import gc
        import sys

        self.cache.clear()
        dropped = self.resources.free()
        gc.collect()  # modules in reference cycles (hooks, compiled graphs) go now, not at some later pass
        torch = sys.modules.get("torch")  # never import torch just to free nothing
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        return dropped
