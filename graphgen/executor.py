"""Running a planned workflow: each needed node once, from the cache where its key is known.

A failing node stops only what depends on it; independent branches still finish. A cancel stops
the run at the next node boundary or at the next step a node reports.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from graphgen.cache import OutputCache, node_key
from graphgen.context import Cancelled, EngineSettings, NodeContext
from graphgen.errors import NodeError
from graphgen.events import (
    Event,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeSkipped,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from graphgen.plan import execution_order
from graphgen.resources import ResourceCache
from graphgen.spec import ALWAYS_RERUN, ExecutionOutcome
from graphgen.validation import PreparedWorkflow


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        run_id: Unique id of the run.
        status: `success`, `failed` (a node failed) or `cancelled`.
        outputs: Output values of every node that executed or came from the cache, by node id
            and output name.
        ui: What output nodes reported (saved files...), by node id.
        executed: Nodes that ran, in order.
        cached: Nodes served from the cache.
        failed: Errors of the nodes that failed.
        skipped: Nodes that did not run because something they depend on failed, with the reason.
        timings: Seconds each executed node took.
        warnings: Warnings nodes reported, by node id.
        node_types: The type of each node the run needed.
        seconds: Wall time of the whole run.
    """

    run_id: str
    status: str = "success"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, NodeError] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    node_types: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def output(self, node_id: str, name: str | int = 0) -> Any:
        """One output value of a node, by output name or index."""
        values = self.outputs[node_id]
        if isinstance(name, int):
            return list(values.values())[name]
        return values[name]


class Executor:
    """Runs prepared workflows against a shared output cache."""

    def __init__(self, cache: OutputCache, settings: EngineSettings, resources: ResourceCache) -> None:
        self.cache = cache
        self.settings = settings
        self.resources = resources

    def run(
        self,
        prepared: PreparedWorkflow,
        *,
        emit: Callable[[Event], None],
        cancel_event: threading.Event,
        force: Iterable[str] = (),
        targets: Iterable[str] | None = None,
        use_cache: bool = True,
    ) -> RunResult:
        run_id = uuid.uuid4().hex[:12]
        started = time.perf_counter()
        order = execution_order(prepared, targets)
        forced = set(force)
        tainted: set[str] = set()
        result = RunResult(run_id=run_id, node_types={n: prepared.nodes[n].spec.type_name for n in order})
        workflow_json = prepared.workflow_json()
        emit(RunStarted(run_id=run_id, nodes=order, node_types=dict(result.node_types)))

        keys: dict[str, str] = {}
        values: dict[str, tuple[Any, ...]] = {}
        broken: dict[str, str] = {}  # node id -> why it has no outputs
        for node_id in order:
            node = prepared.nodes[node_id]
            spec = node.spec
            if cancel_event.is_set():
                result.status = "cancelled"
                break
            blocked = next((src for src, _ in node.links.values() if src in broken), None)
            if blocked is not None:
                reason = f"node {blocked} ({prepared.nodes[blocked].spec.type_name}) {broken[blocked]}"
                broken[node_id] = "was skipped"
                result.skipped[node_id] = reason
                emit(NodeSkipped(run_id=run_id, node_id=node_id, node_type=spec.type_name, reason=reason))
                continue

            try:
                fingerprint = spec.fingerprint(dict(node.constants), self.settings) if spec.fingerprint else None
            except Exception as exc:
                self._fail(result, emit, run_id, node_id, spec.type_name, exc, broken, "fingerprint failed: ")
                continue
            # A node re-runs when forced, when it is non-deterministic, when its fingerprint says
            # so, or when something it depends on re-ran for one of these reasons ("tainted").
            rerun = node_id in forced or not spec.deterministic or fingerprint is ALWAYS_RERUN
            upstream = []
            upstream_tainted = False
            for name, (src, index) in node.links.items():
                upstream.append((name, keys[src], index))
                if src in tainted:
                    upstream_tainted = True
            key = node_key(spec.type_name + "@" + spec.pack, spec.version, node.constants, upstream,
                           None if fingerprint is ALWAYS_RERUN else fingerprint)
            keys[node_id] = key
            if rerun or upstream_tainted or not use_cache:
                tainted.add(node_id)

            outcome = None if node_id in tainted else self.cache.get(key)
            if outcome is not None:
                result.cached.append(node_id)
                emit(NodeCached(run_id=run_id, node_id=node_id, node_type=spec.type_name))
            else:
                outcome = self._execute(prepared, node_id, values, workflow_json, run_id, emit, cancel_event, result)
                if outcome is None:
                    if result.status == "cancelled":
                        break
                    broken[node_id] = "failed"
                    continue
                # Results made from untainted inputs are reusable; a forced re-run of a
                # deterministic node refreshes its entry.
                cacheable = node_id not in tainted or (
                    node_id in forced and spec.deterministic and fingerprint is not ALWAYS_RERUN and not upstream_tainted)
                if cacheable and use_cache:
                    self.cache.put(key, outcome)
            values[node_id] = outcome.values
            result.outputs[node_id] = {o.name or str(i): v for i, (o, v) in enumerate(zip(spec.outputs, outcome.values, strict=True))}
            if outcome.ui:
                result.ui[node_id] = outcome.ui

        if result.status == "cancelled":
            for node_id in order:
                if node_id not in result.outputs and node_id not in result.failed and node_id not in result.skipped:
                    result.skipped[node_id] = "the run was cancelled"
        elif result.failed:
            result.status = "failed"
        result.seconds = time.perf_counter() - started
        emit(RunFinished(run_id=run_id, status=result.status, executed=list(result.executed),
                         cached=list(result.cached), failed=list(result.failed), skipped=list(result.skipped),
                         seconds=result.seconds))
        return result

    def _execute(self, prepared: PreparedWorkflow, node_id: str, values: dict[str, tuple[Any, ...]],
                 workflow_json: dict[str, Any], run_id: str, emit: Callable[[Event], None],
                 cancel_event: threading.Event, result: RunResult) -> ExecutionOutcome | None:
        node = prepared.nodes[node_id]
        spec = node.spec
        kwargs = dict(node.constants)
        for name, (src, index) in node.links.items():
            kwargs[name] = values[src][index]
        ctx = NodeContext(node_id=node_id, node_type=spec.type_name, run_id=run_id, settings=self.settings,
                          resources=self.resources, emit=emit, cancel_event=cancel_event, workflow=workflow_json)
        emit(NodeStarted(run_id=run_id, node_id=node_id, node_type=spec.type_name))
        started = time.perf_counter()
        try:
            outcome = spec.execute(ctx, kwargs)
        except Cancelled:
            result.status = "cancelled"
            result.skipped[node_id] = "cancelled while running"
            emit(NodeSkipped(run_id=run_id, node_id=node_id, node_type=spec.type_name,
                             reason="cancelled while running"))
            return None
        except Exception as exc:
            self._fail(result, emit, run_id, node_id, spec.type_name, exc, None)
            return None
        finally:
            if ctx.warnings:
                result.warnings[node_id] = list(ctx.warnings)
        seconds = time.perf_counter() - started
        result.executed.append(node_id)
        result.timings[node_id] = seconds
        emit(NodeFinished(run_id=run_id, node_id=node_id, node_type=spec.type_name, seconds=seconds, ui=outcome.ui))
        return outcome

    @staticmethod
    def _fail(result: RunResult, emit: Callable[[Event], None], run_id: str, node_id: str, node_type: str,
              exc: Exception, broken: dict[str, str] | None, prefix: str = "") -> None:
        message = prefix + (str(exc) or type(exc).__name__)
        error = NodeError(node_id=node_id, node_type=node_type, message=message, error_type=type(exc).__name__,
                          traceback="".join(traceback.format_exception(exc)))
        result.failed[node_id] = error
        if broken is not None:
            broken[node_id] = "failed"
        emit(NodeFailed(run_id=run_id, node_id=node_id, node_type=node_type, error=message,
                        error_type=type(exc).__name__))
