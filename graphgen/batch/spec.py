"""Batch descriptions: one workflow, many override sets.

A batch is a list of jobs; each job is a set of overrides (`{"seed": 5}`, `{"14.seed": 5}`) applied
to the same workflow. Jobs are written out one by one, or expanded from a sweep:

* `seed=1..64` (an inclusive range; `1..64:2` steps by 2, `0.5..2:0.5` gives floats),
* `seed=1,2,3` (a list, separated by commas),
* `prompt=["a cat, sitting", "a dog"]` (a JSON list, for values that contain commas),
* `prompt=@prompts.txt` (one value per non-empty line of a file).

As in InvokeAI's batches, sweeps in separate groups are combined as a product (every seed with
every prompt), and keys inside one group are zipped (the n-th seed goes with the n-th prompt). On
the command line each `--sweep` is a group; `--sweep 'seed=1..3; prompt=@p.txt'` zips two keys.

Values typed as text (command line, `@file`, ranges written as text) are converted by the input
they are given to, as `--set` values are. Every job gets a name made from its own values and a
hash of all of its overrides, so the same job always lands in the same output folder.

A batch file is JSON::

    {
      "name": "seeds-and-prompts",            # output folder name (default: the workflow's name)
      "overrides": {"steps": 20},             # applied to every job
      "sweep": [{"seed": "1..8"},             # groups: product across, zip within
                {"prompt": ["a cat", "a dog"], "cfg": [5, 7]}],
      "jobs": [{"width": 768}, {"width": 1024}]  # explicit override sets (times the sweep)
    }

`sweep` entries may also be strings in the command-line syntax (`"seed=1..8"`); a file that is a
JSON list is a list of jobs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from graphgen.overrides import RawText

MAX_JOBS = 100_000
_KEY = r"[A-Za-z0-9_][A-Za-z0-9_.:-]*"
_KEY_RE = re.compile(rf"^\s*({_KEY})\s*=", re.ASCII)
_GROUP_SPLIT = re.compile(rf";(?=\s*(?:{_KEY})\s*=)", re.ASCII)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE_RE = re.compile(rf"^\s*({_NUMBER})\s*\.\.\s*({_NUMBER})\s*(?::\s*({_NUMBER})\s*)?$")
BATCH_FILE_KEYS = ("name", "overrides", "sweep", "jobs", "description")


class BatchSpecError(ValueError):
    """A sweep expression or batch file that cannot be understood; the message says how to fix it."""


@dataclass(frozen=True)
class Job:
    """One run of the batch's workflow.

    Attributes:
        index: Position in the expanded batch (0-based).
        name: Folder name of its outputs: the values that vary between jobs, then `digest`.
        overrides: Everything the engine gets (common overrides, then the job's own values).
        values: The job's own values (sweep and job-list keys), for display.
        digest: A hash of all its overrides: the job's identity (resume finds its folder by it).
    """

    index: int
    name: str
    overrides: dict[str, Any]
    values: dict[str, Any]
    digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "digest": self.digest,
                "overrides": json_values(self.overrides), "values": json_values(self.values)}


@dataclass
class BatchSpec:
    """A batch: common overrides, explicit jobs and sweep groups.

    The jobs are `jobs x group_1 x group_2 ...` (a product), each merged over `overrides`;
    the keys inside one group are zipped.
    """

    name: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, list[Any]]] = field(default_factory=list)

    def add_sweep(self, expression: str, base_dir: str | Path = ".") -> BatchSpec:
        """Add one `--sweep` expression (a group) and return self."""
        self.groups.append(parse_sweep(expression, base_dir))
        return self

    def extend(self, other: BatchSpec) -> BatchSpec:
        """Combine with another spec (its overrides win, its groups and jobs multiply in)."""
        self.name = other.name or self.name
        self.overrides = {**self.overrides, **other.overrides}
        if other.jobs:
            self.jobs = [{**a, **b} for a in (self.jobs or [{}]) for b in other.jobs]
        self.groups = [*self.groups, *other.groups]
        return self

    def count(self) -> int:
        total = max(len(self.jobs), 1)
        for group in self.groups:
            total *= len(next(iter(group.values()))) if group else 1
        return total

    def expand(self) -> list[Job]:
        """The jobs, in order (first group outermost); identical jobs are kept once."""
        total = self.count()
        if total > MAX_JOBS:
            raise BatchSpecError(f"the batch expands to {total} jobs, more than {MAX_JOBS}; split it")
        rows: list[list[dict[str, Any]]] = [[dict(j) for j in self.jobs] or [{}]]
        for group in self.groups:
            keys = list(group)
            rows.append([dict(zip(keys, values, strict=True)) for values in zip(*group.values(), strict=True)])
        expanded: list[tuple[dict[str, Any], dict[str, Any], str]] = []
        seen: set[str] = set()
        for combination in itertools.product(*rows):
            values: dict[str, Any] = {}
            for part in combination:
                values.update(part)
            overrides = {**self.overrides, **values}
            digest = overrides_digest(overrides)
            if digest not in seen:
                seen.add(digest)
                expanded.append((values, overrides, digest))
        varying = _varying_keys([overrides for _, overrides, _ in expanded])
        jobs = []
        for index, (values, overrides, digest) in enumerate(expanded):
            shown = {k: v for k, v in values.items() if k in varying} if len(expanded) > 1 else values
            jobs.append(Job(index=index, name=job_name(shown, digest), overrides=overrides, values=values,
                            digest=digest))
        return jobs


def _varying_keys(all_overrides: list[dict[str, Any]]) -> set[str]:
    """Keys whose value is not the same in every job."""
    keys = {k for overrides in all_overrides for k in overrides}

    def shown(overrides: dict[str, Any], key: str) -> str:
        if key not in overrides:
            return "\0missing"
        return json.dumps(canonical_value(overrides[key]), sort_keys=True, default=str)

    return {k for k in keys if len({shown(o, k) for o in all_overrides}) > 1}


def parse_values(text: str, base_dir: str | Path = ".") -> list[Any]:
    """The values of one sweep key: a range, a JSON list, `@file` lines, or comma-separated text."""
    raw = text.strip()
    if raw.startswith("@"):
        path = Path(base_dir) / raw[1:].strip()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise BatchSpecError(f"{raw}: cannot read {str(path)!r} ({exc.strerror or exc})") from None
        values: list[Any] = [RawText(line.strip()) for line in lines if line.strip()]
        if not values:
            raise BatchSpecError(f"{raw}: {str(path)!r} has no non-empty lines")
        return values
    if raw.startswith("["):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BatchSpecError(f"{raw[:60]!r} is not a valid JSON list ({exc.msg})") from None
        if not isinstance(parsed, list) or not parsed:
            raise BatchSpecError(f"{raw[:60]!r}: give a non-empty JSON list")
        return parsed
    match = _RANGE_RE.match(raw)
    if match:
        return _range(*match.groups())
    values = [RawText(part.strip()) for part in raw.split(",")]
    if not raw or any(not v for v in values):
        raise BatchSpecError(f"{text!r}: empty value; write a,b,c, START..END[:STEP], a JSON list or @FILE")
    return values


def _range(start_text: str, end_text: str, step_text: str | None) -> list[Any]:
    try:
        start, end = Decimal(start_text), Decimal(end_text)
        step = Decimal(step_text) if step_text else Decimal(1 if end >= start else -1)
    except InvalidOperation:  # pragma: no cover - the regex admits only numbers
        raise BatchSpecError(f"{start_text}..{end_text}: not a number range") from None
    shown = f"{start_text}..{end_text}" + (f":{step_text}" if step_text else "")
    if step == 0 or (end - start) * step < 0:
        raise BatchSpecError(f"{shown}: the step {step} never gets from {start} to {end}")
    count = int((end - start) / step) + 1
    if count > MAX_JOBS:
        raise BatchSpecError(f"{shown} has {count} values, more than {MAX_JOBS}")
    floats = any(("." in t or "e" in t.lower()) for t in (start_text, end_text, step_text or ""))
    values = [start + step * i for i in range(count)]
    return [float(v) if floats else int(v) for v in values]


def parse_sweep(expression: str, base_dir: str | Path = ".") -> dict[str, list[Any]]:
    """One sweep group: `KEY=VALUES` or several zipped ones, `KEY=VALUES; KEY=VALUES`."""
    group: dict[str, list[Any]] = {}
    for part in _GROUP_SPLIT.split(expression):
        match = _KEY_RE.match(part)
        if not match:
            raise BatchSpecError(f"--sweep {expression!r}: {part.strip()!r} is not KEY=VALUES "
                                 "(e.g. seed=1..64, 14.seed=1,2,3, prompt=@prompts.txt)")
        key = match.group(1)
        if key in group:
            raise BatchSpecError(f"--sweep {expression!r}: {key!r} is given twice")
        group[key] = parse_values(part[match.end():], base_dir)
    return _check_zip(group, f"--sweep {expression!r}")


def _check_zip(group: dict[str, list[Any]], origin: str) -> dict[str, list[Any]]:
    lengths = {key: len(values) for key, values in group.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise BatchSpecError(f"{origin}: keys zipped in one group need as many values each ({listed}); "
                             "give them separately (--sweep per key) for every combination")
    return group


def spec_from_sweeps(sweeps: Iterable[str], overrides: Mapping[str, Any] | None = None,
                     base_dir: str | Path = ".", name: str | None = None) -> BatchSpec:
    """A `BatchSpec` from `--sweep` expressions and common overrides."""
    spec = BatchSpec(name=name, overrides=dict(overrides or {}))
    for expression in sweeps:
        spec.add_sweep(expression, base_dir)
    return spec


def load_batch_file(path: str | Path) -> BatchSpec:
    """Read a batch file (JSON; see the module docs). `@file` values are relative to its folder."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BatchSpecError(f"--batch {path}: cannot read it ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise BatchSpecError(f"--batch {path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return batch_from_data(data, base_dir=path.parent, origin=str(path))


def batch_from_data(data: Any, base_dir: str | Path = ".", origin: str = "batch") -> BatchSpec:
    """A `BatchSpec` from a parsed batch file (a dict, or a list of jobs)."""
    if isinstance(data, list):
        data = {"jobs": data}
    if not isinstance(data, dict):
        raise BatchSpecError(f"{origin}: a batch file is a JSON object (or a list of jobs)")
    unknown = sorted(set(data) - set(BATCH_FILE_KEYS))
    if unknown:
        raise BatchSpecError(f"{origin}: unknown key {unknown[0]!r}; a batch file has {', '.join(BATCH_FILE_KEYS)}")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not _safe_name(name)):
        raise BatchSpecError(f"{origin}: name {name!r} must be a simple folder name (letters, digits, . _ -)")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise BatchSpecError(f"{origin}: 'overrides' is an object of KEY: value")
    jobs = data.get("jobs") or []
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        raise BatchSpecError(f"{origin}: 'jobs' is a list of objects of KEY: value")
    spec = BatchSpec(name=name, overrides=dict(overrides), jobs=[dict(j) for j in jobs])
    sweep = data.get("sweep") or []
    if isinstance(sweep, (dict, str)):
        sweep = [sweep]
    if not isinstance(sweep, list):
        raise BatchSpecError(f"{origin}: 'sweep' is a list of groups ({{KEY: values}} or 'KEY=VALUES')")
    for index, group in enumerate(sweep):
        where = f"{origin}: sweep[{index}]"
        if isinstance(group, str):
            try:
                spec.groups.append(parse_sweep(group, base_dir))
            except BatchSpecError as exc:
                raise BatchSpecError(f"{where}: {exc}") from None
            continue
        if not isinstance(group, dict) or not group:
            raise BatchSpecError(f"{where}: a group is a non-empty object {{KEY: values}} or a string 'KEY=VALUES'")
        parsed: dict[str, list[Any]] = {}
        for key, values in group.items():
            if isinstance(values, list):
                if not values:
                    raise BatchSpecError(f"{where}: {key!r} has an empty list")
                parsed[key] = list(values)
            elif isinstance(values, str):
                try:
                    parsed[key] = parse_values(values, base_dir)
                except BatchSpecError as exc:
                    raise BatchSpecError(f"{where}: {key}: {exc}") from None
            else:
                parsed[key] = [values]
        spec.groups.append(_check_zip(parsed, where))
    return spec


def as_jobs(jobs: BatchSpec | Iterable[Mapping[str, Any]] | None,
            overrides: Mapping[str, Any] | None = None) -> list[Job]:
    """Jobs from a `BatchSpec`, or from a list of override sets (merged over `overrides`)."""
    if isinstance(jobs, BatchSpec):
        if overrides:
            spec = BatchSpec(name=jobs.name, overrides={**overrides, **jobs.overrides}, jobs=jobs.jobs,
                             groups=jobs.groups)
            return spec.expand()
        return jobs.expand()
    if isinstance(jobs, (str, bytes)):
        raise TypeError("jobs is a BatchSpec or a list of override dicts (for sweeps use spec_from_sweeps)")
    items = [dict(j) for j in (jobs if jobs is not None else [{}])]
    return BatchSpec(overrides=dict(overrides or {}), jobs=items or [{}]).expand()


# --------------------------------------------------------------------------- job names


def canonical_value(value: Any) -> Any:
    """What a value means, independent of how it was typed: `RawText("5")` and `5` are the same."""
    if isinstance(value, RawText):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return str(value)
    return value


def json_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides as JSON-able values (command-line text stays text)."""
    return {k: (str(v) if isinstance(v, RawText) else v) for k, v in values.items()}


def overrides_digest(overrides: Mapping[str, Any]) -> str:
    """The identity of a set of overrides (order and typing independent).

    128 bits: duplicates are dropped and finished jobs recognised by it, so it must not collide
    (a 32-bit hash collided within 52,207 seeds). Folder names show only its first 8 characters.
    """
    text = json.dumps({k: canonical_value(v) for k, v in overrides.items()}, sort_keys=True,
                      ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def _slug_value(value: Any) -> str:
    value = canonical_value(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True, default=str)
    if isinstance(value, str) and ("/" in text or "\\" in text):
        text = re.split(r"[/\\]", text.rstrip("/\\"))[-1] or text
    return _UNSAFE.sub("_", text).strip("_.")[:24] or "_"


def job_name(values: Mapping[str, Any], digest: str) -> str:
    """`seed=5-1a2b3c4d`: values (shortened, sorted by key) and the hash of all of the job's overrides."""
    slug = "_".join(f"{_UNSAFE.sub('_', k)}={_slug_value(v)}" for k, v in sorted(values.items()))[:80]
    return f"{slug}-{digest[:8]}" if slug else f"job-{digest[:8]}"


def _safe_name(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name))


def default_batch_name(workflow: Any) -> str:
    """The output folder of a batch: the workflow file's name, or `batch`."""
    if isinstance(workflow, (str, Path)) and not str(workflow).lstrip().startswith(("{", "[")):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(workflow).stem).strip("._")
        if stem:
            return stem[:100]
    return "batch"


def check_batch_name(name: str) -> str:
    if not _safe_name(name):
        raise BatchSpecError(f"batch name {name!r} must be a simple folder name (letters, digits, . _ -)")
    return name


def describe_values(values: Mapping[str, Any], limit: int = 120) -> str:
    """`seed=5 prompt='a cat'` for messages."""
    parts = []
    for key, value in values.items():
        shown = canonical_value(value)
        parts.append(f"{key}={shown!r}" if isinstance(shown, str) else f"{key}={json.dumps(shown, default=str)}")
    text = " ".join(parts) or "(no overrides)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__: Sequence[str] = [
    "BatchSpec", "BatchSpecError", "Job", "as_jobs", "batch_from_data", "canonical_value", "check_batch_name",
    "default_batch_name", "describe_values", "job_name", "json_values", "load_batch_file", "overrides_digest",
    "parse_sweep", "parse_values", "spec_from_sweeps",
]
