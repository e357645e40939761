"""The execution list: running a validated workflow over the run's live graph.

The run starts from its output nodes (or the targets asked for) and the nodes they need through
non-lazy links; a node runs once everything it waits for is done, in a stable order (the
workflow's topological order, node ids breaking ties). On top of that:

- **Lazy inputs**: a node with lazy inputs is asked (`NodeSpec.check_lazy`) which of them it
  needs; those sources join the run and the node is asked again once they are done.
- **Expansion**: a node may return a graph (`ExecutionOutcome.expand`); its nodes join the run,
  and the node's outputs become the values its result links point to (`graphgen.live_graph`).
- **List mapping and blockers** (`graphgen.mapping`).
- **Async nodes**: a node whose call returns an awaitable runs as a task on the run's event
  loop; other ready nodes go on meanwhile, so independent async nodes overlap.

A failing node stops only what depends on it; independent branches still finish. A cancel stops
the run at the next node boundary or at the next step a node reports. Cache policy (keys, what is
reused, why a node ran) is `graphgen.cache.CachePolicy`.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphgen.blocker import ExecutionBlocker
from graphgen.cache import REASON_NOT_CACHED, CachePolicy
from graphgen.context import (
    Cancelled,
    EngineSettings,
    NodeContext,
    reset_current_context,
    reset_current_context_fast,
    set_current_context,
    set_current_context_fast,
)
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
    ignore_event,
)
from graphgen.live_graph import ExpansionError, LiveGraph, is_link
from graphgen.mapping import (
    Outputs,
    blocked_values,
    blocker_in,
    call_inputs,
    merge_outputs,
    merge_ui,
    single_values,
)
from graphgen.plan import execution_order, execution_ranks
from graphgen.run_result import RunResult
from graphgen.spec import ExecutionOutcome
from graphgen.validation import PreparedNode, PreparedWorkflow

if TYPE_CHECKING:
    from graphgen.executor import Executor

UNIQUE_ID, PROMPT, EXTRA_PNGINFO = "UNIQUE_ID", "PROMPT", "EXTRA_PNGINFO"
POLL_SECONDS = 0.05  # how often a run waiting on async nodes looks for a cancel


@dataclass
class _Expansion:
    """A node waiting for the graph it expanded into: per call, its values (links resolved later)."""

    calls: list[tuple[bool, tuple[Any, ...]]]
    ui: dict[str, Any] | None
    started: float


class ExecutionList:
    """One run: its live graph, what waits for what, and the nodes ready to run (one event loop)."""

    def __init__(self, executor: Executor, prepared: PreparedWorkflow, emit: Callable[[Event], None],
                 cancel_event: threading.Event, force: Iterable[str], targets: Iterable[str] | None,
                 use_cache: bool, settings: EngineSettings, extra_pnginfo: dict[str, Any] | None) -> None:
        self.executor = executor
        self.prepared = prepared
        self.emit = emit
        self.listening = emit is not ignore_event  # events are built only for a listener
        self.cancel_event = cancel_event
        self.settings = settings
        self.live = LiveGraph(prepared, executor.registry)
        self.nodes = self.live.nodes  # every node of the run, by id (expansions add to it)
        self.policy = CachePolicy(executor.cache, settings, force, use_cache)
        targets = None if targets is None else list(targets)  # read twice below
        self.targets = list(prepared.output_nodes if targets is None else targets)
        self.order = execution_order(prepared, targets)
        self.result = RunResult(run_id=uuid.uuid4().hex[:12])
        self.workflow_json = prepared.workflow_json()
        self.prompt = self.workflow_json.get("nodes", self.workflow_json)
        self.extra_pnginfo = extra_pnginfo if extra_pnginfo is not None else {"workflow": self.workflow_json}
        # Shared rank tuples, copied: a fully cached run allocates none per node.
        self.rank: dict[str, tuple[int, ...]] = dict(execution_ranks(prepared, targets))
        self.outputs: dict[str, Outputs] = {}
        self.known: set[str] = set()  # nodes that joined the run
        self.waiting: dict[str, int] = {}  # node -> how many sources it still waits for
        self.waiters: dict[str, list[str]] = {}  # source -> nodes waiting for it
        self.requested: dict[str, set[str]] = {}  # node -> lazy inputs it asked for
        self.ready: list[tuple[tuple[int, ...], str]] = []
        self.tasks: dict[asyncio.Future[Any], tuple[str, list[Any], float]] = {}
        self.expanding: dict[str, _Expansion] = {}
        self.started: dict[str, float] = {}
        self.broken: set[str] = set()

    # -- the loop ----------------------------------------------------------------------------------
    async def run(self) -> RunResult:
        started = time.perf_counter()
        result = self.result
        nodes = self.nodes
        for node, exc in self.policy.add_all([nodes[node_id] for node_id in self.order]):
            self._fail(node.node_id, exc, "fingerprint failed: ")
        # Without lazy inputs the planned order is exactly what the targets need.
        first = list(self.order) if not self._any_lazy() else self._closure(self.targets)
        result.node_types = {n: nodes[n].spec.type_name for n in first}
        if self.listening:
            self.emit(RunStarted(run_id=result.run_id, nodes=list(first), node_types=dict(result.node_types)))
        self._join(first)
        while True:
            if self.cancel_event.is_set():
                result.status = "cancelled"
                break
            if self.ready:
                _, node_id = heapq.heappop(self.ready)
                waiting = self._step(node_id)
                if waiting is not None:  # a lazy check that must be awaited
                    await waiting
                if self.tasks:
                    await asyncio.sleep(0)  # let running async nodes make progress between sync ones
                    self._collect(asyncio.Future.done)
                continue
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                self._collect(asyncio.Future.done)
                continue
            stuck = [n for n, count in self.waiting.items() if count > 0 and n not in self.broken]
            if stuck:
                self._report_cycle(stuck)
                continue
            break
        if result.status == "cancelled":
            for task in self.tasks:
                task.cancel()
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=1.0)
            for node_id in self.known:
                if node_id not in self.outputs and node_id not in result.failed and node_id not in result.skipped:
                    result.skipped[node_id] = "the run was cancelled"
        else:
            self._report_unneeded_cached()
            if result.failed:
                result.status = "failed"
        result.seconds = time.perf_counter() - started
        if self.listening:
            self.emit(RunFinished(run_id=result.run_id, status=result.status, executed=list(result.executed),
                                  cached=list(result.cached), failed=list(result.failed),
                                  skipped=list(result.skipped), seconds=result.seconds))
        return result

    def _any_lazy(self) -> bool:
        if not self.prepared.any_lazy():  # known per workflow: no per-node look for the usual one
            return False
        nodes = self.nodes
        return any(nodes[n].spec.lazy_inputs for n in self.order)

    def _report_unneeded_cached(self) -> None:
        """Nodes the run did not need (behind lazy inputs or cached consumers) whose results are
        cached are reported as cached, as ComfyUI reports every cached node of a prompt."""
        for node_id in self.order:
            if node_id in self.known or node_id in self.broken:
                continue
            cached = self.policy.peek(node_id)
            if cached is not None:
                spec = self.nodes[node_id].spec
                self.result.cached.append(node_id)
                self.result.outputs[node_id] = single_values(spec, cached.values)
                self.emit(NodeCached(run_id=self.result.run_id, node_id=node_id, node_type=spec.type_name,
                                     ui=cached.ui))

    # -- joining nodes -------------------------------------------------------------------------------
    def _add_key(self, node: PreparedNode) -> None:
        for _, exc in self.policy.add_all((node,)):
            self._fail(node.node_id, exc, "fingerprint failed: ")

    def _ensure_known(self, node_id: str) -> None:
        """Give a workflow node outside the planned set (an expansion linked to it) a rank and a key."""
        if node_id in self.rank:
            return
        for other in execution_order(self.prepared, [node_id]):
            if other not in self.rank:
                self.rank[other] = (len(self.rank),)
                self._add_key(self.nodes[other])

    def _strong_sources(self, node: PreparedNode) -> list[str]:
        """The sources a node waits for: all linked ones but lazy inputs it has not asked for."""
        lazy = node.spec.lazy_inputs
        if not lazy:
            return [src for src, _ in node.links.values()]
        requested = self.requested.get(node.node_id, ())
        return [src for name, (src, _) in node.links.items() if name not in lazy or name in requested]

    def _closure(self, start: Iterable[str]) -> list[str]:
        """Nodes not yet in the run that `start` needs through non-lazy links, in run order."""
        found: list[str] = []
        seen = self.known
        stack = [n for n in start if n not in seen]
        new: set[str] = set()
        while stack:
            node_id = stack.pop()
            if node_id in new or node_id in seen:
                continue
            if node_id not in self.rank:
                self._ensure_known(node_id)
            new.add(node_id)
            found.append(node_id)
            stack.extend(s for s in self._strong_sources(self.nodes[node_id]) if s not in new and s not in seen)
        found.sort(key=self.rank.__getitem__)
        return found

    def _join(self, node_ids: list[str]) -> None:
        """Add nodes to the run: served from the cache, or waiting for their sources."""
        self.known.update(node_ids)
        nodes = self.nodes
        broken = self.broken
        tainted = self.policy.tainted
        keys = self.policy.keys
        cache_get = self.policy.cache.get
        cached_ids = self.result.cached
        outputs, waiters, waiting = self.outputs, self.waiters, self.waiting
        for node_id in node_ids:
            if node_id in broken:
                self._skip_waiters(node_id)
                continue
            node = nodes[node_id]
            # CachePolicy.lookup, inline: this runs for every node of every run.
            cached = None if node_id in tainted else cache_get(keys[node_id])
            if cached is not None:
                cached_ids.append(node_id)
                if self.listening:
                    self.emit(NodeCached(run_id=self.result.run_id, node_id=node_id, node_type=node.spec.type_name,
                                         ui=cached.ui))
                self._done(node_id, cached.values, cached.ui)
                continue
            if node.spec.lazy_inputs:
                self._wait_for(node_id, self._strong_sources(node))
                continue
            # `_wait_for` inline for a node without lazy inputs: it waits for each linked source once.
            count = 0
            for src, _ in node.links.values():
                if src in outputs:
                    continue
                if src in broken:
                    self._skip(node_id, src)
                    break
                later = waiters.get(src)
                if later is None:
                    waiters[src] = [node_id]
                elif later[-1] == node_id:  # a second link to the same source
                    continue
                else:
                    later.append(node_id)
                count += 1
            else:
                waiting[node_id] = count
                if count == 0:
                    heapq.heappush(self.ready, (self.rank[node_id], node_id))

    def _wait_for(self, node_id: str, sources: Iterable[str]) -> None:
        count = 0
        outputs, broken, waiters = self.outputs, self.broken, self.waiters
        for src in dict.fromkeys(sources):
            if src in outputs:
                continue
            if src in broken:
                self._skip(node_id, src)
                return
            if src in waiters:
                waiters[src].append(node_id)
            else:
                waiters[src] = [node_id]
            count += 1
        self.waiting[node_id] = count
        if count == 0:
            heapq.heappush(self.ready, (self.rank[node_id], node_id))

    def _done(self, node_id: str, outputs: Outputs, ui: dict[str, Any] | None) -> None:
        self.outputs[node_id] = outputs
        waiting = self.waiting
        waiting.pop(node_id, None)
        spec = self.nodes[node_id].spec
        if spec.output_is_list or len(outputs) != 1:
            self.result.outputs[node_id] = single_values(spec, outputs)
        else:  # single_values for the usual one-output node, inline
            items = outputs[0]
            self.result.outputs[node_id] = {spec.output_names[0]: items[0] if len(items) == 1 else items}
        if ui:
            self.result.ui[node_id] = ui
        waiters = self.waiters.pop(node_id, None)
        if waiters:
            for waiter in waiters:
                left = waiting.get(waiter)
                if left is None:
                    continue
                waiting[waiter] = left - 1
                if left == 1:
                    heapq.heappush(self.ready, (self.rank[waiter], waiter))

    # -- running one node ---------------------------------------------------------------------------
    def _step(self, node_id: str) -> Coroutine[Any, Any, None] | None:
        """Run a ready node (or finish its expansion); returns a coroutine when it must await
        its lazy check first. Kept synchronous: most nodes need no awaiting."""
        if node_id in self.broken or node_id in self.outputs:
            return None
        node = self.nodes[node_id]
        spec = node.spec
        if node_id in self.expanding:
            self._resolve_expansion(node)
            return None
        if node_id not in self.started:
            policy = self.policy
            # CachePolicy.recheck, inline: only keys this run stored are looked up again.
            if policy.keys[node_id] in policy.stored:
                cached = policy.recheck(node_id)
                if cached is not None:
                    self.result.cached.append(node_id)
                    if self.listening:
                        self.emit(NodeCached(run_id=self.result.run_id, node_id=node_id, node_type=spec.type_name,
                                             ui=cached.ui))
                    self._done(node_id, cached.values, cached.ui)
                    return None
            self.started[node_id] = time.perf_counter()
            reason = policy.tainted.get(node_id, REASON_NOT_CACHED)
            self.result.reasons[node_id] = reason
            if self.listening:
                self.emit(NodeStarted(run_id=self.result.run_id, node_id=node_id, node_type=spec.type_name,
                                      display_node_id=node.display_id or node_id, reason=reason))
        if spec.plain_call:
            # The usual node: its keyword arguments straight from its sources' outputs, one call,
            # unless a source holds several items (list mapping: the general path below).
            kwargs = dict(node.constants)
            outputs = self.outputs
            for name, (src, index) in node.links.items():
                items = outputs[src][index]
                if len(items) != 1 or type(items[0]) is ExecutionBlocker:  # constants are never blockers
                    break
                kwargs[name] = items[0]
            else:
                for name, kind in spec.engine_hidden:
                    kwargs[name] = self._hidden(node, kind)
                self._call_one(node, kwargs)
                return None
        inputs = self._inputs(node)
        if spec.check_lazy is not None:
            return self._call_after_lazy_check(node, inputs)
        self._call(node, inputs)
        return None

    async def _call_after_lazy_check(self, node: PreparedNode, inputs: dict[str, list[Any]]) -> None:
        if not await self._needs_more(node, inputs):
            self._call(node, inputs)

    def _call(self, node: PreparedNode, inputs: dict[str, list[Any]]) -> None:
        """Call a node once per item of its inputs (list mapping), or start its async calls."""
        spec = node.spec
        node_id = node.node_id
        single = not spec.input_is_list
        if single:
            kwargs = {}
            for name, items in inputs.items():
                if len(items) != 1:
                    single = False
                    break
                kwargs[name] = items[0]
        if single and ExecutionBlocker not in map(type, kwargs.values()):
            self._call_one(node, kwargs)
            return
        calls: list[Any] = []
        pending = False
        try:
            for index, kwargs in call_inputs(spec, inputs):
                blocker = blocker_in(spec, kwargs)
                if blocker is not None:
                    if blocker.message is not None:
                        self._blocked_error(node, blocker.message)
                    calls.append(blocked_values(spec, ExecutionBlocker(None)))
                    continue
                ctx = self._context(node, index)
                token = set_current_context(ctx)
                try:
                    returned = spec.execute(ctx, kwargs)
                    if inspect.isawaitable(returned):
                        returned = _ensure_future_in(ctx, returned)
                        pending = True
                finally:
                    reset_current_context(token)
                    if ctx.warnings:
                        self.result.warnings.setdefault(node_id, []).extend(ctx.warnings)
                calls.append(returned)
        except Cancelled:
            self._cancelled(node)
            return
        except Exception as exc:
            self._fail(node_id, exc)
            return
        if pending:
            futures = [c for c in calls if isinstance(c, asyncio.Future)]
            self.tasks[asyncio.gather(*futures, return_exceptions=True)] = (node_id, calls, self.started[node_id])
            return
        self._finish(node, calls)

    def _call_one(self, node: PreparedNode, kwargs: dict[str, Any]) -> None:
        """The usual case: one call with one value per input, none of them a blocker."""
        spec = node.spec
        node_id = node.node_id
        ctx = self._context(node, 0)
        token = set_current_context_fast(ctx)
        try:
            returned = spec.execute(ctx, kwargs)
        except Cancelled:
            self._cancelled(node)
            return
        except Exception as exc:
            self._fail(node_id, exc)
            return
        finally:
            reset_current_context_fast(token)
            if ctx.warnings:
                self.result.warnings.setdefault(node_id, []).extend(ctx.warnings)
        if type(returned) is ExecutionOutcome and returned.expand is None:
            values = returned.values
            if len(values) == len(spec.outputs) and not spec.output_is_list:
                self._finished(node, ([values[0]],) if len(values) == 1 else tuple([[v] for v in values]),
                               returned.ui)
                return
        if inspect.isawaitable(returned):
            future = _ensure_future_in(ctx, returned)
            self.tasks[asyncio.gather(future, return_exceptions=True)] = (node_id, [future],
                                                                          self.started[node_id])
            return
        self._finish(node, [returned])

    def _collect(self, done: Callable[[asyncio.Future[Any]], bool]) -> None:
        for future in [f for f in self.tasks if done(f)]:
            node_id, calls, _ = self.tasks.pop(future)
            node = self.nodes[node_id]
            results = future.result()
            for value in results:
                if isinstance(value, Cancelled) or isinstance(value, asyncio.CancelledError):
                    self._cancelled(node)
                    return
                if isinstance(value, BaseException):
                    self._fail(node_id, value)
                    break
            else:
                it = iter(results)
                self._finish(node, [next(it) if isinstance(c, asyncio.Future) else c for c in calls])

    def _inputs(self, node: PreparedNode) -> dict[str, list[Any]]:
        """Each input as a list of items (missing lazy values are [None])."""
        inputs: dict[str, list[Any]] = {name: [value] for name, value in node.constants.items()}
        outputs = self.outputs
        spec = node.spec
        raw = spec.raw_link_inputs
        for name, (src, index) in node.links.items():
            if raw and name in raw:
                inputs[name] = [[src, index]]
            elif src in outputs:
                inputs[name] = outputs[src][index]
            else:
                inputs[name] = [None]  # a lazy input not computed (yet)
        for name, kind in spec.engine_hidden:
            inputs[name] = [self._hidden(node, kind)]
        return inputs

    def _hidden(self, node: PreparedNode, kind: str) -> Any:
        if kind == UNIQUE_ID:
            return node.node_id
        if kind == PROMPT:
            return self.prompt
        if kind == EXTRA_PNGINFO:
            return self.extra_pnginfo
        return self.live

    def _context(self, node: PreparedNode, index: int) -> NodeContext:
        ex = self.executor
        return NodeContext(node_id=node.node_id, node_type=node.spec.type_name, run_id=self.result.run_id,
                           settings=self.settings, resources=ex.resources, emit=self.emit,
                           cancel_event=self.cancel_event, workflow=self.workflow_json,
                           display_id=node.display_id, prompt=self.prompt, extra_pnginfo=self.extra_pnginfo,
                           dynprompt=self.live, call_index=index)

    async def _needs_more(self, node: PreparedNode, inputs: dict[str, list[Any]]) -> bool:
        """Ask a node with lazy inputs what it needs; True when it must wait for more."""
        spec = node.spec
        missing = {name for name, (src, _) in node.links.items()
                   if src not in self.outputs and (d := spec.inputs.get(name)) is not None and d.lazy}
        if not missing:
            return False
        wanted: set[str] = set()
        check = spec.check_lazy
        assert check is not None
        try:
            for index, kwargs in call_inputs(spec, inputs):
                if blocker_in(spec, kwargs) is not None:
                    continue
                ctx = self._context(node, index)
                token = set_current_context(ctx)
                try:
                    names = check(ctx, kwargs)
                    if inspect.isawaitable(names):
                        names = await names
                finally:
                    reset_current_context(token)
                if isinstance(names, (list, tuple, set)):
                    wanted.update(n for n in names if isinstance(n, str))
        except Cancelled:
            self._cancelled(node)
            return True
        except Exception as exc:
            self._fail(node.node_id, exc, "check_lazy_status failed: ")
            return True
        wanted &= missing
        if not wanted:
            return False
        self.requested.setdefault(node.node_id, set()).update(wanted)
        sources = [node.links[name][0] for name in wanted]
        new = self._closure(sources)
        for other in new:
            self.result.node_types[other] = self.nodes[other].spec.type_name
        self._wait_for(node.node_id, sources)
        self._join(new)
        return True

    def _finish(self, node: PreparedNode, calls: list[Any]) -> None:
        """Turn a node's call results into its outputs, or start its expansion."""
        spec = node.spec
        node_id = node.node_id
        n_outputs = len(spec.outputs)
        values: list[tuple[Any, ...]] = []
        uis: list[dict[str, Any]] = []
        graphs: list[Any] = []
        try:
            for call in calls:
                if isinstance(call, tuple):  # a blocked call
                    values.append(call)
                    graphs.append(None)
                    continue
                outcome: ExecutionOutcome = call
                returned = outcome.values
                if len(returned) != n_outputs:
                    raise TypeError(f"node type {spec.type_name} returned {len(returned)} values but declares "
                                    f"{n_outputs} outputs")
                values.append(tuple(returned))
                graphs.append(outcome.expand)
                if outcome.ui:
                    uis.append(outcome.ui)
        except Exception as exc:
            self._fail(node_id, exc)
            return
        ui = merge_ui(uis)
        if any(g is not None for g in graphs):
            self._expand(node, values, graphs, ui)
            return
        outputs = merge_outputs(spec, values)
        self._finished(node, outputs, ui)

    def _finished(self, node: PreparedNode, outputs: Outputs, ui: dict[str, Any] | None) -> None:
        node_id = node.node_id
        seconds = time.perf_counter() - self.started[node_id]
        self.result.executed.append(node_id)
        self.result.timings[node_id] = seconds
        if node_id in self.policy.storable:  # CachePolicy.store, without a call when nothing is stored
            self.policy.store(node_id, ExecutionOutcome(values=outputs, ui=ui))
        if self.listening:
            self.emit(NodeFinished(run_id=self.result.run_id, node_id=node_id, node_type=node.spec.type_name,
                                   seconds=seconds, ui=ui, display_node_id=node.display_id or node_id))
        self._done(node_id, outputs, ui)

    # -- expansion ---------------------------------------------------------------------------------
    def _expand(self, node: PreparedNode, values: list[tuple[Any, ...]], graphs: list[Any],
                ui: dict[str, Any] | None) -> None:
        node_id = node.node_id
        added: list[PreparedNode] = []
        try:
            for graph in graphs:
                if graph is not None:
                    added.extend(self.live.expand(node, graph))
        except ExpansionError as exc:
            self._fail(node_id, exc)
            return
        base = self.rank[node_id]
        for i, new in enumerate(added):
            for src, _ in new.links.values():
                if src not in self.live.extra:
                    self._ensure_known(src)
            self.rank[new.node_id] = base + (i,)
            self.result.node_types[new.node_id] = new.spec.type_name
            self._add_key(new)
        wanted = [v[0] for call, graph in zip(values, graphs, strict=True) if graph is not None
                  for v in call if is_link(v)]
        wanted += [n.node_id for n in added if n.spec.output_node]
        self.expanding[node_id] = _Expansion(calls=[(g is not None, v) for v, g in zip(values, graphs, strict=True)],
                                             ui=ui, started=self.started[node_id])
        new_nodes = self._closure(wanted)
        self._wait_for(node_id, wanted)
        self._join(new_nodes)

    def _resolve_expansion(self, node: PreparedNode) -> None:
        expansion = self.expanding.pop(node.node_id)
        flags = node.spec.list_flags
        merged: list[list[Any]] = [[] for _ in flags]
        for expanded, call in expansion.calls:
            for index, value in enumerate(call):
                if expanded and is_link(value):
                    merged[index].extend(self.outputs[value[0]][value[1]])
                elif flags[index] and not isinstance(value, ExecutionBlocker):
                    merged[index].extend(value)
                else:
                    merged[index].append(value)
        self._finished(node, tuple(merged), expansion.ui)

    # -- failures ----------------------------------------------------------------------------------
    def _fail(self, node_id: str, exc: BaseException, prefix: str = "") -> None:
        node = self.nodes[node_id]
        message = prefix + (str(exc) or type(exc).__name__)
        error = NodeError(node_id=node_id, node_type=node.spec.type_name, message=message,
                          error_type=type(exc).__name__, traceback="".join(traceback.format_exception(exc)))
        self._record_failure(node, error)

    def _record_failure(self, node: PreparedNode, error: NodeError) -> None:
        node_id = node.node_id
        self.result.failed[node_id] = error
        self.broken.add(node_id)
        self.waiting.pop(node_id, None)
        self.emit(NodeFailed(run_id=self.result.run_id, node_id=node_id, node_type=node.spec.type_name,
                             error=error.message, error_type=error.error_type,
                             display_node_id=node.display_id or node_id))
        self._skip_waiters(node_id)

    def _blocked_error(self, node: PreparedNode, message: str) -> None:
        """A blocker with a message reached `node`: reported as its error (once); the block goes on silently."""
        if node.node_id in self.result.failed:
            return
        error = NodeError(node_id=node.node_id, node_type=node.spec.type_name,
                          message=f"Execution Blocked: {message}", error_type="ExecutionBlocked", traceback="")
        self.result.failed[node.node_id] = error
        self.emit(NodeFailed(run_id=self.result.run_id, node_id=node.node_id, node_type=node.spec.type_name,
                             error=error.message, error_type=error.error_type,
                             display_node_id=node.display_id or node.node_id))

    def _skip(self, node_id: str, because: str) -> None:
        if node_id in self.broken:
            return
        source = self.nodes[because]
        verb = "failed" if because in self.result.failed else "was skipped"
        reason = f"node {because} ({source.spec.type_name}) {verb}"
        self.broken.add(node_id)
        self.waiting.pop(node_id, None)
        self.expanding.pop(node_id, None)
        self.result.skipped[node_id] = reason
        self.emit(NodeSkipped(run_id=self.result.run_id, node_id=node_id, node_type=self.nodes[node_id].spec.type_name,
                              reason=reason))
        self._skip_waiters(node_id)

    def _skip_waiters(self, node_id: str) -> None:
        stack = [(w, node_id) for w in self.waiters.pop(node_id, ())]
        while stack:
            waiter, because = stack.pop()
            if waiter in self.broken:
                continue
            self._skip(waiter, because)

    def _cancelled(self, node: PreparedNode) -> None:
        self.result.status = "cancelled"
        self.cancel_event.set()
        self.result.skipped[node.node_id] = "cancelled while running"
        self.emit(NodeSkipped(run_id=self.result.run_id, node_id=node.node_id, node_type=node.spec.type_name,
                              reason="cancelled while running"))

    def _report_cycle(self, stuck: list[str]) -> None:
        """Nodes wait for each other (a cycle an expansion or a lazy request made): blame the node
        that expanded (ComfyUI's rule), fail it, and let the rest go on."""
        blamed = next((n for n in stuck if self.live.get_display_node_id(n) != n), stuck[0])
        blamed = self.live.get_display_node_id(blamed)
        node = self.nodes[blamed]
        if blamed in self.broken:  # already reported: stop the stuck nodes waiting
            for n in stuck:
                self.broken.add(n)
                self.waiting.pop(n, None)
            return
        members = ", ".join(sorted(stuck)[:8])
        error = NodeError(node_id=blamed, node_type=node.spec.type_name,
                          message=f"Dependency cycle detected: nodes {members} wait for each other",
                          error_type="DependencyCycleError", traceback="")
        self._record_failure(node, error)
        for n in stuck:
            if n not in self.broken:
                self.broken.add(n)
                self.waiting.pop(n, None)
                self.result.skipped[n] = f"it is part of a dependency cycle (reported on node {blamed})"


def _ensure_future_in(ctx: NodeContext, awaitable: Any) -> asyncio.Future[Any]:
    """Schedule an async node call; its task copies the current context now, so the node's
    helpers (`current_context()`) see `ctx` across awaits."""
    token = set_current_context(ctx)
    try:
        return asyncio.ensure_future(awaitable)
    finally:
        reset_current_context(token)
