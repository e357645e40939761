"""Where a batch's outputs go, written once each.

    <output_dir>/<batch name>/<job name>/...   the files the job's output nodes wrote
    <output_dir>/<batch name>/<job name>/job.json   what ran (overrides, files, worker, timings)

A job's files are assembled in a staging folder (`<batch>/.staging/<run id>/`), `job.json`
last, and the folder is renamed into place in one step: a job folder is complete or absent, and
one that exists is never written again. A job is done when a folder holds a `job.json` whose
`digest` (the 128-bit hash of all its overrides) is the job's, whatever the folder's name (which
shows the values that varied in the batch it ran in, and the digest's first 8 characters);
resuming skips those jobs. Failed jobs publish nothing (resuming
runs them again).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphgen.batch.spec import Job, json_values
from graphgen.files import atomic_write_bytes, atomic_write_text, safe_folder, safe_join

MANIFEST = "job.json"


class BatchStore:
    """The batch folder: which jobs are done, staging and publishing job folders."""

    def __init__(self, output_dir: str | os.PathLike[str], name: str) -> None:
        self.output_dir = Path(output_dir)
        self.name = name
        self.root = safe_folder(self.output_dir, [name])
        self.run_id = uuid.uuid4().hex[:12]
        self._staging: Path | None = None
        self._done: dict[str, Path] = {}
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
                manifest = os.path.join(entry.path, MANIFEST)
                if entry.name.startswith(".") or not os.path.isfile(manifest):
                    continue
                try:  # the job's full digest is in its manifest (the folder shows only a prefix)
                    digest = json.loads(Path(manifest).read_text(encoding="utf-8")).get("digest")
                except (OSError, ValueError):
                    digest = None
                if isinstance(digest, str):
                    self._done.setdefault(digest, Path(entry.path))

    def job_dir(self, job: Job) -> Path:
        """The job's folder: the existing one when it is done, else `<batch>/<job name>`."""
        return self._done.get(job.digest) or self.root / job.name

    def is_done(self, job: Job) -> bool:
        return job.digest in self._done

    def manifest(self, job: Job) -> dict[str, Any] | None:
        try:
            return json.loads((self.job_dir(job) / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    @property
    def staging(self) -> Path:
        if self._staging is None:
            self._staging = safe_folder(self.root, [".staging", self.run_id])
        return self._staging

    def scratch(self, job: Job) -> Path:
        """A fresh folder for one attempt at a job (local workers write straight into it)."""
        folder = self.staging / f"{job.name}.{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True)
        return folder

    def write_files(self, folder: Path, files: Mapping[str, bytes]) -> None:
        """Write files a remote worker sent back (relative names, checked to stay inside)."""
        for relative, data in files.items():
            atomic_write_bytes(safe_join(folder, relative), data)

    def publish(self, job: Job, folder: Path, manifest: dict[str, Any]) -> Path | None:
        """Give a finished job folder its name; None (and the folder dropped) if the job is done already."""
        target = self.job_dir(job)
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
        if self.is_done(job) or target.exists():
            shutil.rmtree(folder, ignore_errors=True)
            return None
        try:
            os.rename(folder, target)  # atomic; refuses a non-empty target
        except OSError:
            if target.exists():
                shutil.rmtree(folder, ignore_errors=True)
                return None
            raise
        self._done[job.digest] = target
        return target

    def discard(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove this run's staging folder (and `.staging` when it is left empty)."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                self._staging.parent.rmdir()
            self._staging = None


def make_manifest(job: Job, outcome: dict[str, Any], job_dir: Path, output_dir: Path, *, batch: str,
                  worker: str, workflow_digest: str) -> dict[str, Any]:
    """`job.json`: the job, what ran, and its files (paths as they are after publishing)."""
    return {
        "job": job.name, "digest": job.digest, "index": job.index, "batch": batch,
        "overrides": json_values(job.overrides),
        "values": json_values(job.values), "status": outcome.get("status"), "worker": worker,
        "files": list(outcome.get("files", [])), "ui": rebase_ui(outcome.get("ui", {}), job_dir, output_dir),
        "executed": outcome.get("executed", []), "cached": outcome.get("cached", []),
        "timings": outcome.get("timings", {}), "outputs": outcome.get("outputs", {}),
        "seconds": outcome.get("seconds", 0.0), "workflow_digest": workflow_digest,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def rebase_ui(ui: Any, job_dir: Path, output_dir: Path) -> Any:
    """UI entries of a job with paths inside the published job folder (and subfolders from the output folder)."""
    try:
        base = job_dir.resolve().relative_to(output_dir.resolve())
    except ValueError:
        base = Path(job_dir.name)

    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: fix(v) for k, v in value.items() if k != "_relative"}
            if value.get("_relative") and isinstance(value.get("path"), str):
                relative = Path(value["path"])
                out["path"] = str(job_dir / relative)
                if "subfolder" in value:
                    out["subfolder"] = (base / relative.parent).as_posix()
            return out
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return fix(ui)
