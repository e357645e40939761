"""Terminal rendering with rich: the live run view, validation issues, pack problems, summaries."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from graphgen.errors import Issue
from graphgen.events import (
    Event,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeInfo,
    NodePreview,
    NodeProgress,
    NodeSkipped,
    NodeStarted,
    NodeWarning,
    RunFinished,
    RunStarted,
)
from graphgen.executor import RunResult
from graphgen.registry import PackProblem

# Per-node lines are printed for workflows up to this size; larger ones show counts only.
DETAIL_LIMIT = 60
# Output that goes to a pipe or a file is not wrapped at 80 columns (a wrapped path cannot be
# copied or grepped); this is its width instead.
PIPE_WIDTH = 4096


def make_console(stderr: bool = False) -> Console:
    """A rich console for the command line: a terminal's width, or no wrapping when piped."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, width=PIPE_WIDTH, soft_wrap=True)


def print_issues(console: Console, issues: Iterable[Issue], origin: str = "") -> None:
    """One line per issue: where, what, and how to fix it."""
    issues = list(issues)
    title = f"{origin}: " if origin else ""
    console.print(f"[bold red]{escape(title)}{len(issues)} problem{'s' if len(issues) != 1 else ''} "
                  "found; nothing was run[/]")
    for issue in issues:
        fix = f" [dim]— fix: {escape(issue.hint)}[/]" if issue.hint else ""
        console.print(f"  [red]✗[/] [bold]{escape(issue.where())}[/]: {escape(issue.message)}{fix}",
                      soft_wrap=True)


def print_pack_problems(console: Console, problems: Iterable[PackProblem], debug: bool = False,
                        tracebacks: dict[str, str] | None = None) -> None:
    for problem in problems:
        console.print(f"[yellow]warning:[/] {escape(problem.message)}", soft_wrap=True)
        if debug and tracebacks and tracebacks.get(problem.pack):
            console.print(escape(tracebacks[problem.pack]))


class JsonEventWriter:
    """`--json`: one JSON object per event and line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        self.stream.write(json.dumps(event.to_dict(), default=str, ensure_ascii=False) + "\n")
        self.stream.flush()


@contextlib.contextmanager
def step_bar(console: Console, description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar for work outside a run (e.g. building models once); yields `advance(step, total)`."""
    with Progress(SpinnerColumn(), TextColumn(escape(description)), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(description, total=None)

        def advance(step: int, total: int) -> None:
            progress.update(task, completed=step, total=total)

        yield advance


class EtaColumn(TimeRemainingColumn):
    """Time remaining: the view's own estimate where it set one (`eta` field, seconds or None for
    unknown), else rich's estimate from the task's speed."""

    def render(self, task: Task) -> Text:
        if "eta" not in task.fields:
            return super().render(task)
        eta = task.fields["eta"]
        if eta is None:
            return Text("-:--:--", style="progress.remaining")
        return Text(str(timedelta(seconds=max(0, int(eta + 0.5)))), style="progress.remaining")


class EventView:
    """Base of the live views: a rich progress display, used as a context manager and as `on_event`.

    Subclasses handle an event kind `k` with a method `_on_k`.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), EtaColumn(), console=console, transient=True,
        )

    def __enter__(self) -> EventView:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, event: Any) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler:
            handler(event)


class RunView(EventView):
    """A live view of a run: overall progress, a bar for nodes that report steps, node lines.

    Use as a context manager and pass the instance as `on_event`.
    """

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(console)
        self._overall: TaskID | None = None
        self._steps: dict[str, TaskID] = {}
        self._types: dict[str, str] = {}
        self._detail = True
        self._done = 0
        self._total = 0
        self._clock = clock
        self._started: dict[str, float] = {}
        self._ran: list[float] = []  # seconds of the nodes that ran (not cached)

    def _advance(self) -> None:
        self._done += 1
        if self._overall is not None:
            self.progress.update(self._overall, completed=self._done, eta=self.eta())

    def eta(self, node_id: str | None = None, value: float = 0, total: float | None = None) -> float | None:
        """Seconds left in the run: what the running node's own steps say is left of it, plus the
        nodes not started yet at the average time of those that ran. None when nothing tells.

        (An estimate from the number of nodes done alone says "1 second" while a training node that
        started after a few quick loaders has minutes to go.)
        """
        pending = max(self._total - self._done, 0)
        average = sum(self._ran) / len(self._ran) if self._ran else None
        if node_id is None or node_id not in self._started:
            return average * pending if average is not None else None
        elapsed = self._clock() - self._started[node_id]
        if not total or value <= 0:
            return None
        remaining = elapsed * (total - value) / value
        later = max(pending - 1, 0)
        return remaining + (average * later if average is not None else 0.0)

    def _on_run_started(self, event: RunStarted) -> None:
        self._types = dict(event.node_types)
        self._detail = len(event.nodes) <= DETAIL_LIMIT
        self._total = len(event.nodes)
        self._overall = self.progress.add_task("nodes", total=len(event.nodes), eta=None)

    def _label(self, node_id: str) -> str:
        return f"{escape(node_id)} [cyan]{escape(self._types.get(node_id, ''))}[/]"

    def _on_node_started(self, event: NodeStarted) -> None:
        self._started[event.node_id] = self._clock()
        if self._overall is not None:
            self.progress.update(self._overall, description=f"running {self._label(event.node_id)}")

    def _on_node_cached(self, event: NodeCached) -> None:
        if self._detail:
            self.console.print(f"  [dim]•[/] {self._label(event.node_id)} [dim]cached[/]")
        self._print_ui(event.ui)
        self._advance()

    def _print_ui(self, ui: dict[str, Any] | None) -> None:
        """An output node's results: saved file paths, texts (one line each, shortened)."""
        for kind, items in (ui or {}).items():
            for item in items if isinstance(items, list) else [items]:
                shown = item.get("path") if isinstance(item, dict) else item
                if shown is not None and not isinstance(shown, (dict, list)):
                    text = str(shown)
                    text = text if len(text) <= 200 else text[:197] + "..."
                    self.console.print(f"    [dim]{escape(kind)}:[/] {escape(text)}", soft_wrap=True)

    def _on_node_progress(self, event: NodeProgress) -> None:
        task = self._steps.get(event.node_id)
        if task is None:
            task = self.progress.add_task(f"  {self._label(event.node_id)}", total=event.total)
            self._steps[event.node_id] = task
        description = f"  {self._label(event.node_id)}" + (f" {escape(event.message)}" if event.message else "")
        self.progress.update(task, completed=event.value, total=event.total, description=description)
        if self._overall is not None:
            self.progress.update(self._overall, eta=self.eta(event.node_id, event.value, event.total))

    def _end_steps(self, node_id: str) -> None:
        task = self._steps.pop(node_id, None)
        if task is not None:
            self.progress.remove_task(task)

    def _on_node_preview(self, event: NodePreview) -> None:
        for item in (event.ui or {}).get("images", []):
            text = f"{event.message}: " if event.message else ""
            self.console.print(f"  [cyan]▣[/] {self._label(event.node_id)}: {escape(text)}{escape(str(item.get('path')))}",
                               soft_wrap=True)

    def _on_node_info(self, event: NodeInfo) -> None:
        self.console.print(f"  [blue]i[/] {self._label(event.node_id)}: {escape(event.message)}", soft_wrap=True)

    def _on_node_warning(self, event: NodeWarning) -> None:
        self.console.print(f"  [yellow]![/] {self._label(event.node_id)}: {escape(event.message)}", soft_wrap=True)

    def _on_node_finished(self, event: NodeFinished) -> None:
        self._end_steps(event.node_id)
        self._ran.append(event.seconds)
        if self._detail:
            self.console.print(f"  [green]✓[/] {self._label(event.node_id)} [dim]{event.seconds:.2f}s[/]")
        self._print_ui(event.ui)
        self._advance()

    def _on_node_failed(self, event: NodeFailed) -> None:
        self._end_steps(event.node_id)
        self.console.print(f"  [red]✗[/] {self._label(event.node_id)} failed: {escape(event.error)}", soft_wrap=True)
        self._advance()

    def _on_node_skipped(self, event: NodeSkipped) -> None:
        self._end_steps(event.node_id)
        if self._detail:
            self.console.print(f"  [yellow]-[/] {self._label(event.node_id)} skipped: {escape(event.reason)}")
        self._advance()

    def _on_run_finished(self, event: RunFinished) -> None:
        if self._overall is not None:
            self.progress.update(self._overall, description="done")


def print_summary(console: Console, result: RunResult, debug: bool = False) -> None:
    """Timings of the slowest nodes and the run's totals."""
    node_types = result.node_types
    if result.timings and max(result.timings.values()) >= 0.05:
        table = Table(title="slowest nodes" if len(result.timings) > 10 else "timings", show_edge=False)
        table.add_column("node")
        table.add_column("type", style="cyan")
        table.add_column("seconds", justify="right")
        for node_id, seconds in sorted(result.timings.items(), key=lambda kv: -kv[1])[:10]:
            table.add_row(node_id, node_types.get(node_id, ""), f"{seconds:.3f}")
        console.print(table)
    colour = {"success": "green", "failed": "red", "cancelled": "yellow"}[result.status]
    console.print(f"[bold {colour}]{result.status}[/]: {len(result.executed)} executed, {len(result.cached)} cached, "
                  f"{len(result.failed)} failed, {len(result.skipped)} skipped in {result.seconds:.2f}s")
    for error in result.failed.values():
        console.print(f"  [red]✗[/] {escape(str(error))}", soft_wrap=True)
        if debug and error.traceback:
            console.print(escape(error.traceback))
