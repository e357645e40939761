"""Running one batch job on an Engine (in this process or in a Ray actor).

The job's output nodes write into a fresh scratch folder (the run's own output folder: the
Engine's settings are left alone), so that the caller can publish the job's files once, under the job's own
name, whatever the worker. Output nodes are forced to run: they write files, and a cached output
node would write none. Everything upstream is cached and the Engine's loaded models are reused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graphgen.errors import WorkflowError
from graphgen.events import Event

JobPayload = dict[str, Any]
"""`{"name", "index", "overrides", "force"}`: what a worker needs to run a job."""


def execute_job(engine: Any, source: Any, payload: JobPayload, scratch: Path,
                on_event: Callable[[dict[str, Any]], None] | None = None, keep_events: bool = False,
                keep_run_ui: bool = False) -> dict[str, Any]:
    """Run one job with `engine`, its files going to `scratch`; returns a JSON-able outcome.

    The outcome: `status` (success, failed, invalid, cancelled), `error`, `ui` (paths relative to
    `scratch`), `files` (relative paths), `executed`, `cached`, `failed` (node errors), `timings`,
    `outputs` (a short description of each output value), `seconds`, `model_loads`, `events`;
    with `keep_run_ui`, also `_run_ui`: the run's UI entries themselves (not JSON-able copies).
    """
    started = time.perf_counter()
    events: list[dict[str, Any]] = []

    scratch = Path(scratch)

    def emit(event: Event) -> None:
        if keep_events or on_event is not None:
            data = event.to_dict()
            if data.get("ui"):
                data["ui"] = relative_paths(data["ui"], scratch)
            if keep_events:
                events.append(data)
            if on_event is not None:
                on_event(data)

    scratch.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, Any] = {"status": "failed", "error": "", "ui": {}, "files": [], "executed": [],
                               "cached": [], "failed": {}, "timings": {}, "outputs": {}, "events": events}
    try:
        prepared = engine.prepare(source, payload.get("overrides") or {})
        force = list(dict.fromkeys([*prepared.output_nodes, *payload.get("force", [])]))
        result = engine.run(prepared, on_event=emit, force=force, output_dir=scratch)
    except WorkflowError as exc:
        outcome.update(status="invalid", error=str(exc), issues=[i.to_dict() for i in exc.issues])
    except Exception as exc:  # a bug or an environment problem: reported with the job, the batch goes on
        outcome.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    else:
        errors = {k: v.to_dict() for k, v in result.failed.items()}
        outcome["_run_ui"] = result.ui  # the engine's own objects (its cache holds them): see repoint_paths
        outcome.update(status=result.status, ui=relative_paths(result.ui, scratch), executed=list(result.executed),
                       cached=list(result.cached), failed=errors, timings=dict(result.timings),
                       outputs=_describe_outputs(result.outputs))
        if result.failed:
            first = next(iter(result.failed.values()))
            outcome["error"] = str(first) + (f" (and {len(result.failed) - 1} more)" if len(result.failed) > 1 else "")
        elif result.status == "cancelled":
            outcome["error"] = "cancelled"
    outcome["files"] = list_files(scratch)
    if not keep_run_ui:
        outcome.pop("_run_ui", None)
    outcome["seconds"] = time.perf_counter() - started
    outcome["model_loads"] = getattr(getattr(engine, "resources", None), "loads", 0)
    return outcome


def repoint_paths(ui: Any, scratch: Path, job_dir: Path, output_dir: Path) -> None:
    """Point a local run's UI entries (in place) from the scratch folder to the published job folder.

    The Engine's cache holds these same objects (an output node's result), so a later plain run
    that is served from the cache reports files that exist, not the vanished scratch copies.
    """
    roots = [str(scratch), str(scratch.resolve())]
    try:
        base = job_dir.resolve().relative_to(output_dir.resolve())
    except ValueError:
        base = Path(job_dir.name)
    if isinstance(ui, dict):
        path = ui.get("path")
        if isinstance(path, str):
            for root in roots:
                if path == root or path.startswith(root + os.sep):
                    relative = Path(os.path.relpath(path, root))
                    ui["path"] = str(job_dir / relative)
                    if "subfolder" in ui:
                        ui["subfolder"] = (base / relative.parent).as_posix()
                    break
        for value in ui.values():
            repoint_paths(value, scratch, job_dir, output_dir)
    elif isinstance(ui, list):
        for value in ui:
            repoint_paths(value, scratch, job_dir, output_dir)


def list_files(folder: Path) -> list[str]:
    """Files under `folder` (relative, `/`-separated, sorted), leaving out hidden scratch (`.temp`)."""
    found = []
    root = Path(folder)
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            found.append((Path(directory) / name).relative_to(root).as_posix())
    return found


def relative_paths(ui: Any, scratch: Path) -> Any:
    """UI entries with `path`s inside the scratch folder made relative (marked; the caller re-roots them)."""
    roots = {str(scratch), str(scratch.resolve())}

    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: fix(v) for k, v in value.items()}
            path = value.get("path")
            if isinstance(path, str):
                for root in roots:
                    if path == root or path.startswith(root + os.sep):
                        out["path"] = Path(os.path.relpath(path, root)).as_posix()
                        out["_relative"] = True
                        break
            return out
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        return str(value)

    return fix(ui)


def _describe_outputs(outputs: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """`{"6": {"image": "Tensor[1, 64, 64, 3] float32"}}`: what came out, without the values."""
    described: dict[str, dict[str, str]] = {}
    for node, values in outputs.items():
        described[node] = {name: _describe(value) for name, value in values.items()}
    return described


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__}[{', '.join(str(s) for s in shape)}] {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, (int, float, bool)) or value is None:
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    return type(value).__name__
