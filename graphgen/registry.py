"""The node registry: which node types exist, and which pack each came from.

Packs come from three places: the built-in packs in `nodes/` (installed as `graphgen_nodes`),
installed distributions that declare the entry-point group `graphgen.nodes`, and plugin folders
(`--plugins DIR`, `GRAPHGEN_PLUGIN_PATH`) laid out like ComfyUI's `custom_nodes`.

A pack is a module exposing `NODES` (graphgen `Node` classes, ComfyUI classic or schema classes),
ComfyUI's `NODE_CLASS_MAPPINGS` (+ `NODE_DISPLAY_NAME_MAPPINGS`), and/or ComfyUI's
`comfy_entrypoint()` (an async function returning a `ComfyExtension` that lists schema nodes).
Plugin folders are imported, and their ComfyUI-style nodes run, with ComfyUI's modules available
(`graphgen.compat`); an import graphgen does not provide fails that pack alone. Two packs defining the same
node type never overwrite each other: the name becomes ambiguous, the collision is reported
naming both packs, and each stays reachable as `pack/Type`. A built-in node type is the
exception: a plugin cannot take its name (every shipped workflow would break), so the built-in
keeps the bare name and the plugin's node is reachable as `pack/Type`, with a warning that says so.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from graphgen import compat
from graphgen.comfy_classic import classic_spec, is_classic_node
from graphgen.comfy_schema import is_schema_node, schema_spec
from graphgen.errors import Issue
from graphgen.spec import NodeSpec

ENTRY_POINT_GROUP = "graphgen.nodes"
PLUGIN_PATH_ENV = "GRAPHGEN_PLUGIN_PATH"
BUILTIN_PACKAGE = "graphgen_nodes"


@dataclass
class PackInfo:
    """A loaded (or failed) node pack."""

    name: str
    source: str
    node_types: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None


@dataclass
class PackProblem:
    """Something wrong while loading packs: an import failure or a name collision."""

    kind: str  # "import_failed" | "collision" | "bad_node"
    pack: str
    message: str
    detail: str = ""


class UnknownNodeType(KeyError):
    """Raised by `NodeRegistry.get` for a name that is not registered (or is ambiguous)."""


class NodeRegistry:
    """Maps node type names to specs."""

    def __init__(self) -> None:
        self._specs: dict[str, NodeSpec] = {}
        self._qualified: dict[str, NodeSpec] = {}
        self._ambiguous: dict[str, list[str]] = {}
        self.packs: dict[str, PackInfo] = {}
        self.problems: list[PackProblem] = []
        self.generation = 0
        """Bumped on every registration, so that memoized validations can tell they are stale."""

    # -- lookup -----------------------------------------------------------------------------
    def __contains__(self, type_name: str) -> bool:
        return type_name in self._specs or type_name in self._qualified

    def get(self, type_name: str) -> NodeSpec:
        """The spec of `type_name` (or `pack/Type`); raises `UnknownNodeType`."""
        spec = self._specs.get(type_name) or self._qualified.get(type_name)
        if spec is None:
            raise UnknownNodeType(type_name)
        return spec

    def ambiguity(self, type_name: str) -> list[str] | None:
        """The packs that all define `type_name`, when more than one does."""
        return self._ambiguous.get(type_name)

    def unknown_type_issue(self, node_id: str, type_name: str) -> Issue:
        """The issue for a node whose type is unknown (with close names) or defined by several packs."""
        packs = self.ambiguity(type_name)
        if packs:
            return Issue(code="ambiguous_node_type", node_id=node_id, node_type=type_name,
                         message=f"node type {type_name!r} is defined by several packs: {', '.join(packs)}",
                         hint=f"write the type as {' or '.join(repr(f'{p}/{type_name}') for p in packs)}, "
                              "or remove a pack")
        close = self.closest(type_name)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
            "install or point --plugins at the pack that provides it; `graphgen nodes` lists known types"
        return Issue(code="unknown_node_type", node_id=node_id, node_type=type_name,
                     message=f"unknown node type {type_name!r}", hint=hint)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> dict[str, NodeSpec]:
        """Unambiguous node types by name."""
        return dict(self._specs)

    def listed(self) -> dict[str, NodeSpec]:
        """Every node type by the name a workflow reaches it with: the bare name where it is
        unambiguous, `pack/Type` for the others (a plugin's node shadowed by a built-in, or a type
        several plugins define), so that `graphgen nodes` hides none."""
        listed = dict(self._specs)
        for qualified, spec in self._qualified.items():
            if self._specs.get(spec.type_name) is not spec:
                listed[qualified] = spec
        return listed

    def is_builtin(self, pack: str) -> bool:
        """Whether `pack` is one of graphgen's built-in packs."""
        info = self.packs.get(pack)
        return info is not None and info.source == "built-in"

    def closest(self, type_name: str, n: int = 3) -> list[str]:
        """Known names that look like `type_name` (for "did you mean" hints)."""
        candidates = list(self._specs) + list(self._ambiguous)
        found = difflib.get_close_matches(type_name, candidates, n=n, cutoff=0.6)
        lowered = {c.lower(): c for c in candidates}
        if type_name.lower() in lowered and lowered[type_name.lower()] not in found:
            found.insert(0, lowered[type_name.lower()])
        return found[:n]

    # -- registration -----------------------------------------------------------------------
    def register(self, node: Any, pack: str = "user", name: str | None = None, display_name: str = "") -> NodeSpec:
        """Register a graphgen `Node` class, a ComfyUI classic class, or a ready `NodeSpec`."""
        spec = to_spec(node, name, display_name)
        spec.pack = pack
        self.generation += 1
        info = self.packs.setdefault(pack, PackInfo(name=pack, source="registered in code"))
        qualified = f"{pack}/{spec.type_name}"
        if qualified in self._qualified and self._qualified[qualified].source is not spec.source:
            raise ValueError(f"pack {pack!r} defines node type {spec.type_name!r} twice")
        self._qualified[qualified] = spec
        if spec.type_name not in info.node_types:
            info.node_types.append(spec.type_name)
        existing = self._specs.get(spec.type_name)
        if existing is not None and existing.pack != pack and self.is_builtin(existing.pack) != self.is_builtin(pack):
            builtin = existing if self.is_builtin(existing.pack) else spec
            self._specs[spec.type_name] = builtin
            self._report_shadowed(spec.type_name, builtin.pack, pack if builtin is existing else existing.pack)
        elif spec.type_name in self._ambiguous:
            self._ambiguous[spec.type_name].append(pack)
            self._report_collision(spec.type_name)
        elif existing is not None and existing.pack != pack:
            del self._specs[spec.type_name]
            self._ambiguous[spec.type_name] = [existing.pack, pack]
            self._report_collision(spec.type_name)
        else:
            self._specs[spec.type_name] = spec
        return spec

    def _report_collision(self, type_name: str) -> None:
        packs = self._ambiguous[type_name]
        self.problems = [p for p in self.problems if not (p.kind == "collision" and p.detail == type_name)]
        self.problems.append(PackProblem(
            kind="collision",
            pack=packs[-1],
            message=(f"node type {type_name!r} is defined by packs {', '.join(repr(p) for p in packs)}; "
                     f"neither overwrites the other: use {' or '.join(repr(f'{p}/{type_name}') for p in packs)}"
                     " in workflows, or remove one pack"),
            detail=type_name,
        ))

    def _report_shadowed(self, type_name: str, builtin: str, plugin: str) -> None:
        self.problems.append(PackProblem(
            kind="collision",
            pack=plugin,
            message=(f"pack {plugin!r} defines node type {type_name!r}, which is a built-in node: {type_name!r} "
                     f"stays the built-in one (pack {builtin!r}); the plugin's is '{plugin}/{type_name}' in "
                     "workflows and in `graphgen nodes`"),
            detail=type_name,
        ))

    def register_module(self, module: ModuleType, pack: str, source: str) -> PackInfo:
        """Register every node a pack module exposes."""
        info = self.packs.setdefault(pack, PackInfo(name=pack, source=source))
        info.source = source
        found = any(hasattr(module, name) for name in ("NODES", "NODE_CLASS_MAPPINGS", "comfy_entrypoint"))
        for node in getattr(module, "NODES", None) or ():
            self._register_safely(node, pack)
        entrypoint = getattr(module, "comfy_entrypoint", None)
        if callable(entrypoint):
            try:
                extension_nodes = _extension_nodes(entrypoint)
            except Exception as exc:
                self.problems.append(PackProblem("bad_node", pack, f"pack {pack!r}: comfy_entrypoint() failed: "
                                                 f"{type(exc).__name__}: {exc}"))
                extension_nodes = []
            for node in extension_nodes:
                self._register_safely(node, pack)
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None) or {}
        display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
        for name, node in mappings.items():
            self._register_safely(node, pack, name=name, display_name=display.get(name, ""))
        if not found:
            self.problems.append(PackProblem("bad_node", pack, f"pack {pack!r} ({source}) defines no NODES, "
                                             "no NODE_CLASS_MAPPINGS and no comfy_entrypoint"))
        return info

    def _register_safely(self, node: Any, pack: str, name: str | None = None, display_name: str = "") -> None:
        try:
            self.register(node, pack=pack, name=name, display_name=display_name)
        except Exception as exc:
            label = name or getattr(node, "__name__", repr(node))
            self.problems.append(PackProblem("bad_node", pack, f"pack {pack!r}: node {label!r} is invalid: {exc}"))

    # -- discovery --------------------------------------------------------------------------
    def load_builtin(self) -> None:
        """Load the built-in packs (every subpackage of `graphgen_nodes`)."""
        try:
            package = importlib.import_module(BUILTIN_PACKAGE)
        except ImportError as exc:
            self.problems.append(PackProblem("import_failed", BUILTIN_PACKAGE, f"built-in packs unavailable: {exc}"))
            return
        for module_info in pkgutil.iter_modules(package.__path__):
            if module_info.ispkg and not module_info.name.startswith("_"):
                self._import_pack(f"{BUILTIN_PACKAGE}.{module_info.name}", module_info.name, "built-in")

    def load_entry_points(self) -> None:
        """Load installed packs that declare the `graphgen.nodes` entry-point group."""
        for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(entry.dist, "name", "?") if getattr(entry, "dist", None) else "?"
            source = f"entry point {entry.name} = {entry.value} (distribution {dist})"
            try:
                loaded = entry.load()
            except Exception as exc:
                self._import_failed(entry.name, source, exc)
                continue
            if isinstance(loaded, ModuleType):
                self.register_module(loaded, entry.name, source)
            else:
                nodes = loaded() if callable(loaded) and not isinstance(loaded, type) else loaded
                module = ModuleType(entry.name)
                module.NODES = list(nodes) if isinstance(nodes, Iterable) else [nodes]  # type: ignore[attr-defined]
                self.register_module(module, entry.name, source)

    def load_plugin_dir(self, directory: str | os.PathLike[str]) -> None:
        """Load packs from a plugin folder (ComfyUI `custom_nodes` style).

        The folder may itself be a pack (it has an `__init__.py`), or hold packs: subfolders with
        an `__init__.py`, and single `.py` files. Names starting with `.` or `_`, and
        `*.disabled`, are skipped, as in ComfyUI.
        """
        root = Path(directory).expanduser()
        if not root.is_dir():
            self.problems.append(PackProblem("import_failed", str(root),
                                             f"plugin folder {str(root)!r} does not exist or is not a folder"))
            return
        if (root / "__init__.py").is_file():
            self._import_file_pack(root / "__init__.py", root.name, package_dir=root)
            return
        for entry in sorted(root.iterdir()):
            if entry.name.startswith((".", "_")) or entry.name.endswith(".disabled"):
                continue
            if entry.is_dir() and (entry / "__init__.py").is_file():
                self._import_file_pack(entry / "__init__.py", entry.name, package_dir=entry)
            elif entry.is_file() and entry.suffix == ".py":
                self._import_file_pack(entry, entry.stem, package_dir=None)

    def load_plugin_path_env(self) -> None:
        """Load the plugin folders listed in `GRAPHGEN_PLUGIN_PATH` (os.pathsep-separated)."""
        for part in os.environ.get(PLUGIN_PATH_ENV, "").split(os.pathsep):
            if part.strip():
                self.load_plugin_dir(part.strip())

    def _import_pack(self, module_name: str, pack: str, source: str) -> None:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            self._import_failed(pack, source, exc)
            return
        self.register_module(module, pack, source)

    def _import_file_pack(self, path: Path, pack: str, package_dir: Path | None) -> None:
        """Import a plugin-folder pack with ComfyUI's modules available, and register its nodes.

        Its ComfyUI-style nodes get the same modules while they run (`compat.scoped`)."""
        with compat.scope():
            compat.use_registry(self)  # ComfyUI's `nodes` module looks up core nodes here
            before = set(self._qualified)
            self._import_file_pack_scoped(path, pack, package_dir)
            for qualified in set(self._qualified) - before:
                _scope_spec(self._qualified[qualified])

    def _import_file_pack_scoped(self, path: Path, pack: str, package_dir: Path | None) -> None:
        # A unique module name per file, so that two folders with a pack of the same name
        # don't replace each other in sys.modules.
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
        module_name = f"graphgen_plugin_{digest}_{''.join(c if c.isalnum() else '_' for c in pack)}"
        source = f"plugin folder {package_dir or path}"
        try:
            if module_name in sys.modules:
                module = sys.modules[module_name]
            else:
                spec = importlib.util.spec_from_file_location(
                    module_name, path,
                    submodule_search_locations=[str(package_dir)] if package_dir else None,
                )
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot import {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(module_name, None)
                    raise
        except Exception as exc:
            self._import_failed(pack, source, exc)
            return
        self.register_module(module, pack, source)

    def _import_failed(self, pack: str, source: str, exc: BaseException) -> None:
        message = compat.friendly_import_error(exc) or f"{type(exc).__name__}: {exc}"
        self.packs[pack] = PackInfo(name=pack, source=source, error=message,
                                    traceback="".join(traceback.format_exception(exc)))
        self.problems.append(PackProblem("import_failed", pack, f"pack {pack!r} ({source}) failed to import: {message}"))


def to_spec(node: Any, name: str | None = None, display_name: str = "") -> NodeSpec:
    """Turn a graphgen `Node` class, a classic class or a `NodeSpec` into a `NodeSpec`."""
    from graphgen.node import Node

    if isinstance(node, NodeSpec):
        spec = node
    elif isinstance(node, type) and issubclass(node, Node):
        spec = node.spec()
    elif is_schema_node(node):
        spec = schema_spec(node, name, display_name)
    elif is_classic_node(node):
        spec = classic_spec(name or node.__name__, node, display_name)
    else:
        raise TypeError(f"{node!r} is neither a graphgen Node class nor a ComfyUI-style (classic or schema) node class")
    if name and name != spec.type_name:
        spec.type_name = name
    if display_name:
        spec.display_name = display_name
    return spec


def _extension_nodes(entrypoint: Any) -> list[Any]:
    """The nodes of a schema-API pack: `await (await comfy_entrypoint()).get_node_list()`."""
    import asyncio

    async def collect() -> list[Any]:
        extension = entrypoint()
        if inspect.isawaitable(extension):
            extension = await extension
        on_load = getattr(extension, "on_load", None)
        if on_load is not None:
            loaded = on_load()
            if inspect.isawaitable(loaded):
                await loaded
        nodes = extension.get_node_list()
        return list(await nodes if inspect.isawaitable(nodes) else nodes)

    return asyncio.run(collect())


def _scope_spec(spec: NodeSpec) -> None:
    """Run a ComfyUI-style node's code (execute, lazy checks, validation...) with ComfyUI's modules."""
    if spec.style not in ("comfyui-classic", "comfyui-schema"):
        return
    for item in dataclasses.fields(spec):
        value = getattr(spec, item.name)
        if item.name != "source" and callable(value) and not isinstance(value, type):
            setattr(spec, item.name, compat.scoped(value))


def default_registry(plugin_dirs: Iterable[str | os.PathLike[str]] = (), builtin: bool = True,
                     entry_points: bool = True, env: bool = True) -> NodeRegistry:
    """A registry with the built-in packs, installed packs and plugin folders loaded."""
    registry = NodeRegistry()
    if builtin:
        registry.load_builtin()
    if entry_points:
        registry.load_entry_points()
    if env:
        registry.load_plugin_path_env()
    for directory in plugin_dirs:
        registry.load_plugin_dir(directory)
    return registry
