"""The modules ComfyUI custom nodes import, provided only while such packs load and run.

ComfyUI packs import `comfy.utils`, `comfy.model_management`, `comfy_execution.graph_utils`,
`folder_paths`, `server`, `nodes`... graphgen provides its own versions of the ones that need no
ComfyUI model code (the subpackages of `graphgen.compat`). They are never installed under those
names: `scope()` puts them into `sys.modules` under ComfyUI's names for as long as a pack is
imported or one of its nodes runs, and takes them out again afterwards (what was there before is
put back). Nested and concurrent scopes share one reference count.

When a real ComfyUI is importable (`comfy` is found on `sys.path` and is not ours), nothing is
injected: that ComfyUI's modules are never shadowed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import inspect
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

# ComfyUI's module name -> graphgen's module providing it. Every submodule is listed: a name that is
# not here is not provided, and importing it fails with "No module named ..." for that pack alone.
PROVIDED: dict[str, str] = {
    "comfy": "graphgen.compat.comfy",
    "comfy.utils": "graphgen.compat.comfy.utils",
    "comfy.model_management": "graphgen.compat.comfy.model_management",
    "comfy.samplers": "graphgen.compat.comfy.samplers",
    "comfy.comfy_types": "graphgen.compat.comfy.comfy_types",
    "comfy.comfy_types.node_typing": "graphgen.compat.comfy.comfy_types.node_typing",
    "comfy_execution": "graphgen.compat.comfy_execution",
    "comfy_execution.graph": "graphgen.compat.comfy_execution.graph",
    "comfy_execution.graph_utils": "graphgen.compat.comfy_execution.graph_utils",
    "comfy_api": "graphgen.compat.comfy_api",
    "comfy_api.latest": "graphgen.compat.comfy_api.latest",
    "comfy_api.latest._io": "graphgen.compat.comfy_api.latest._io",
    "comfy_api.latest._ui": "graphgen.compat.comfy_api.latest._ui",
    "comfy_api.v0_0_2": "graphgen.compat.comfy_api.v0_0_2",
    "folder_paths": "graphgen.compat.folder_paths",
    "server": "graphgen.compat.server",
    "nodes": "graphgen.compat.nodes",
}
_PREFIX = "graphgen.compat."

_lock = threading.Lock()
_depth = 0
_saved: dict[str, ModuleType] = {}
_entered: list[bool] = []  # non-empty while our modules are in sys.modules
_modules: dict[str, ModuleType] | None = None
_real_comfyui: bool | None = None

F = TypeVar("F", bound=Callable[..., Any])


def real_comfyui_present() -> bool:
    """Whether a real ComfyUI (`comfy/model_management.py` on `sys.path`) is importable."""
    global _real_comfyui
    if _real_comfyui is None:
        found = sys.modules.get("comfy")
        if found is not None and not getattr(found, "__name__", "").startswith(_PREFIX):
            _real_comfyui = True
        else:
            spec = importlib.machinery.PathFinder.find_spec("comfy")
            locations = list(spec.submodule_search_locations or []) if spec is not None else []
            _real_comfyui = any((Path(place) / "model_management.py").is_file() for place in locations)
    return _real_comfyui


def _load() -> dict[str, ModuleType]:
    global _modules
    if _modules is None:
        _modules = {alias: importlib.import_module(name) for alias, name in PROVIDED.items()}
    return _modules


def enter() -> None:
    """Make the compat modules importable under ComfyUI's names (reference counted)."""
    global _depth
    with _lock:
        _depth += 1
        if _depth > 1 or real_comfyui_present():
            return
        modules = _load()
        # Only names something else held need putting back later (usually none).
        _saved.update({alias: sys.modules[alias] for alias in modules if alias in sys.modules})
        _entered.append(True)
        sys.modules.update(modules)


def leave() -> None:
    """Undo one `enter()`; the last one restores what `sys.modules` held before."""
    global _depth
    with _lock:
        _depth -= 1
        if _depth > 0 or not _entered:
            return
        _entered.clear()
        modules_now = sys.modules
        for alias, module in _load().items():
            if modules_now.get(alias) is module:
                previous = _saved.get(alias)
                if previous is None:
                    del modules_now[alias]
                else:
                    modules_now[alias] = previous
        _saved.clear()


def active() -> bool:
    """Whether a scope is open now."""
    return _depth > 0


@contextmanager
def scope() -> Iterator[None]:
    """`with scope():` the compat modules are importable as `comfy`, `folder_paths`, ..."""
    enter()
    try:
        yield
    finally:
        leave()


def scope_for(specs: Iterable[Any]) -> AbstractContextManager[None]:
    """`scope()` when one of these node specs runs pack code in it (see `scoped`), else nothing."""
    if any(getattr(spec.execute, "__graphgen_compat_scoped__", False) for spec in specs):
        return scope()
    return nullcontext()


def scoped(fn: F) -> F:
    """`fn` wrapped so that it (and, for an async function, its coroutine) runs inside `scope()`."""
    if getattr(fn, "__graphgen_compat_scoped__", False):
        return fn
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with scope():
                return await fn(*args, **kwargs)

        wrapper: Any = async_wrapper
    else:
        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            enter()  # (not `with scope()`: this runs for every node call, and a generator costs)
            try:
                result = fn(*args, **kwargs)
            finally:
                leave()
            if inspect.iscoroutine(result):  # an async node's coroutine runs later: keep the scope then
                return _in_scope(result)
            return result

        wrapper = sync_wrapper
    wrapper.__graphgen_compat_scoped__ = True
    return wrapper  # type: ignore[no-any-return]


async def _in_scope(awaitable: Any) -> Any:
    with scope():
        return await awaitable


def use_settings(settings: Any) -> None:
    """The folders `folder_paths` answers with outside a run (inside one: the run's own)."""
    from graphgen.compat import _runtime

    _runtime.set_default_settings(settings)


def use_registry(registry: Any) -> None:
    """The registry whose built-in nodes the `nodes` module offers (set while packs load)."""
    from graphgen.compat import _runtime

    _runtime.set_registry(registry)


def friendly_import_error(exc: BaseException) -> str | None:
    """For an import of something graphgen does not provide, a message naming the missing symbol."""
    if not isinstance(exc, ImportError):
        return None
    name = getattr(exc, "name", None) or ""
    top = name.split(".")[0]
    text = str(exc).replace(_PREFIX, "")
    if isinstance(exc, ModuleNotFoundError) and top in {a.split(".")[0] for a in PROVIDED}:
        siblings = sorted(a for a in PROVIDED if a.split(".")[0] == top and not a.split(".")[-1].startswith("_"))
        return (f"needs ComfyUI's module {name!r}, which graphgen does not provide "
                f"(of {top!r} graphgen provides {', '.join(siblings)})")
    if " from " in text and any(f"'{alias}'" in text for alias in PROVIDED):
        return f"needs {text.split('cannot import name ')[-1].split(' (')[0]}, which graphgen's version does not provide"
    return None
