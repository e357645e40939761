"""Batches on Ray: one actor per GPU, each holding its own graphgen Engine.

Each actor (`GraphgenWorker`, `num_gpus=1`) builds an Engine once and runs jobs one after the
other, so its models stay loaded across jobs. A job's files come back as bytes with its outcome
(status, UI entries, a summary of the outputs, its node events) and the caller publishes them
as a local batch does, once, under the job's name.

Faults: an actor that dies (killed, out of memory) is restarted by Ray and the jobs it had are
retried on it; this takes both `max_restarts` (the actor comes back) and `max_task_retries` (its
calls are replayed), as either alone loses the job. A job that still fails (it kills its worker
every time) is reported with its overrides and the batch goes on; a job that raises inside the
workflow is an ordinary failed job. Workers hand back nothing but return values, so a retried job
can never write twice.

Connecting: `address="auto"` attaches to the cluster running on this machine (the token is found
by itself); an explicit `HOST:PORT` needs `RAY_AUTH_MODE=token` and the cluster's token
(`RAY_AUTH_TOKEN`, or `~/.ray/auth_token`): when the token is there the mode is set here; when it is
not, Ray refuses and a clear `BatchError` says what to do. `"local"` starts a private local cluster;
None uses the connected cluster, else RAY_ADDRESS, else a new local one.

Workers import graphgen: it must be installed on every node (`pip install graphgen[ray]`); the
folder this graphgen is imported from is also put on the workers' PYTHONPATH, which covers a
local cluster and a shared file system. Relative paths (models, inputs) are resolved against the
driver's working directory, which the workers enter when it exists on their node.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphgen.batch.runner import BatchError, BatchRun
from graphgen.batch.spec import Job
from graphgen.batch.worker import execute_job

INSTALL_HINT = "Ray is not installed: pip install 'graphgen[ray]' (or: pip install ray)"
PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "GRAPHGEN_PLUGIN_PATH",
              "TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY")


SCRATCH_PREFIX = "graphgen-worker-"


def _remove_stale_scratch(root: Path) -> None:
    """Remove scratch folders of workers that died without cleaning up (killed, out of memory)."""
    for entry in root.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = entry.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or entry.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:  # alive under another user, or gone meanwhile
            continue


def import_ray() -> Any:
    """The `ray` module, or a `BatchError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise BatchError(INSTALL_HINT) from None
    return ray


class GraphgenWorker:
    """A Ray actor with one Engine; becomes `ray.remote(...)` in `RayExecutor.start`."""

    def __init__(self, settings: dict[str, Any], cwd: str | None = None) -> None:
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        from graphgen.engine import Engine

        _remove_stale_scratch(Path(tempfile.gettempdir()))
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        self.engine = Engine(output_dir=self.scratch / "output", input_dir=settings.get("input_dir") or "input",
                             models_dir=settings.get("models_dir"), plugins=settings.get("plugins") or ())
        self.jobs = 0

    def info(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(), "gpus": gpus,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                "model_loads": self.engine.resources.loads, "jobs": self.jobs,
                "restarted": bool(context.was_current_actor_reconstructed)}

    def run_job(self, source: Any, payload: dict[str, Any]) -> dict[str, Any]:
        folder = self.scratch / f"{payload.get('name', 'job')}.{uuid.uuid4().hex[:6]}"
        try:
            outcome = execute_job(self.engine, source, payload, folder, keep_events=True)
            outcome["file_bytes"] = ({name: (folder / name).read_bytes() for name in outcome["files"]}
                                     if outcome["status"] == "success" else {})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.jobs += 1
        outcome["worker"] = self.info()
        return outcome

    def free(self) -> int:
        return int(self.engine.free_resources())

    def cleanup(self) -> None:
        """Remove this actor's scratch folder (called before it is stopped)."""
        shutil.rmtree(self.scratch, ignore_errors=True)


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return os.path.isfile(path)


def _refresh_ray_config() -> None:
    """Make an already imported Ray see a changed RAY_AUTH_MODE (what Ray does when it enables tokens)."""
    if "ray" not in sys.modules or sys.modules["ray"] is None:
        return
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]

        Config.initialize("")
    except Exception:  # a Ray without this hook reads the variable when it connects  # noqa: BLE001
        pass


def _explicit(address: str | None) -> bool:
    return address not in (None, "", "auto", "local")


def auth_help(address: str) -> str:
    return (f"Attaching to {address} by address needs RAY_AUTH_MODE=token and the cluster's token in "
            "RAY_AUTH_TOKEN or ~/.ray/auth_token (print it on the head node with `ray get-auth-token`); "
            "on a node of the cluster, --ray auto finds it by itself")


class RayExecutor:
    """Runs a batch on Ray actors, one per GPU by default, each with its own Engine.

    Args:
        address: "auto", "local", "HOST:PORT", "ray://HOST:PORT" or None (see the module docs).
        workers: Actors to start (default: one per GPU in the cluster; 1 when it has none).
        engine_settings: `input_dir`, `models_dir`, `plugins` of the workers' Engines.
        gpus_per_worker: GPUs each actor reserves (default 1; 0 on a cluster without GPUs).
        cpus_per_worker: CPUs each actor reserves (Ray's default when None).
        max_restarts: Times Ray restarts a dead actor.
        max_task_retries: Times a job is replayed on a restarted actor.
        prefetch: Jobs queued on each actor besides the running one (hides the round trip).
        start_timeout: Seconds to wait for the actors to come up.
        init_options: Extra `ray.init` arguments when this executor connects.

    The actors live until `close()`: pass one executor to several `run_batch` calls to keep
    their models loaded.
    """

    kind = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None,
                 engine_settings: Mapping[str, Any] | None = None, *, gpus_per_worker: float | None = None,
                 cpus_per_worker: float | None = None, max_restarts: int = 4, max_task_retries: int = 2,
                 prefetch: int = 1, start_timeout: float = 600.0,
                 init_options: Mapping[str, Any] | None = None) -> None:
        if workers is not None and workers < 1:
            raise BatchError(f"--workers {workers}: give at least 1")
        if max_restarts < 0 or max_task_retries < 0:
            raise BatchError("max_restarts and max_task_retries are bounded counts (0 or more)")
        if _explicit(address) and not os.environ.get("RAY_AUTH_MODE") and _token_available():
            # Attaching by address takes token mode set before Ray reads its config (`auto` finds it itself).
            os.environ["RAY_AUTH_MODE"] = "token"
            _refresh_ray_config()
        self.ray = import_ray()
        self.address = address
        self.workers_wanted = workers
        settings = dict(engine_settings or {})
        self.settings = {
            "input_dir": str(Path(settings.get("input_dir") or "input").absolute()),
            "models_dir": str(Path(settings["models_dir"]).absolute()) if settings.get("models_dir") else None,
            "plugins": [str(Path(p).absolute()) for p in settings.get("plugins") or ()],
        }
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.prefetch = max(0, prefetch)
        self.start_timeout = start_timeout
        self.init_options = dict(init_options or {})
        self.actors: list[Any] = []
        self.names: list[str] = []
        self.alive: list[bool] = []
        self._owns_ray = False
        self._infos: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ connecting

    def _env_vars(self) -> dict[str, str]:
        import graphgen

        package_root = str(Path(graphgen.__file__).resolve().parent.parent)
        paths = [package_root, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
        env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
        env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
        return env

    def connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        # None: RAY_ADDRESS when it is set, else a new local cluster (not one that happens to run here)
        address = self.address or os.environ.get("RAY_ADDRESS") or "local"
        if _explicit(address) and not os.environ.get("RAY_AUTH_MODE") and _token_available():
            os.environ["RAY_AUTH_MODE"] = "token"
            _refresh_ray_config()
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address == "local":
            options["include_dashboard"] = False
        options.update(self.init_options)
        try:
            ray.init(address=address, **options)
        except Exception as exc:  # ray raises AuthenticationError, ConnectionError, RuntimeError...
            name = type(exc).__name__
            text = str(exc)
            if name == "AuthenticationError" or "authenticat" in text.lower() or "auth_token" in text.lower():
                raise BatchError(f"the Ray cluster at {address} refused this client (authentication). "
                                 f"{auth_help(address)}") from None
            if address == "auto" and isinstance(exc, ConnectionError):
                raise BatchError("--ray auto: no Ray cluster runs on this machine; start one "
                                 "(ray start --head) or use --ray local") from None
            if _explicit(address) and isinstance(exc, ConnectionError) and os.environ.get("RAY_AUTH_MODE") != "token":
                # Ray logs "Unauthenticated" and raises a plain ConnectionError after retrying ~20 s
                raise BatchError(f"cannot connect to Ray at {address}: it is unreachable or, as Ray clusters "
                                 "use token authentication by default, it refused this client, which has no "
                                 f"token. {auth_help(address)}") from None
            raise BatchError(f"cannot connect to Ray ({address}): {name}: "
                             f"{text.splitlines()[0] if text else ''}") from None
        self._owns_ray = True

    # ------------------------------------------------------------------ workers

    def start(self, run: BatchRun) -> None:
        if not self.actors:
            self._start_actors()
        for name, info in zip(self.names, self._infos, strict=True):
            run.worker_ready(name, info["pid"], info["node"], info["gpus"])

    def _start_actors(self) -> None:
        ray = self.ray
        self.connect()
        total_gpus = float(ray.cluster_resources().get("GPU", 0))
        gpus = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if total_gpus >= 1 else 0.0)
        if self.workers_wanted is not None:
            count = self.workers_wanted
        elif gpus > 0:
            count = max(1, int(total_gpus // gpus))
        else:
            count = 1
        if gpus > 0 and count * gpus > total_gpus:
            raise BatchError(f"{count} workers x {gpus:g} GPU need {count * gpus:g} GPUs; the Ray cluster has "
                             f"{total_gpus:g} (give --workers {int(total_gpus // gpus) or 1} or add GPU nodes)")
        options: dict[str, Any] = {"num_gpus": gpus, "max_restarts": self.max_restarts,
                                   "max_task_retries": self.max_task_retries,
                                   "runtime_env": {"env_vars": self._env_vars()}}
        if self.cpus_per_worker is not None:
            options["num_cpus"] = self.cpus_per_worker
        remote = ray.remote(GraphgenWorker)
        cwd = os.getcwd()
        self.actors = [remote.options(**options).remote(self.settings, cwd) for _ in range(count)]
        self.names = [f"ray-{i}" for i in range(count)]
        self.alive = [True] * count
        try:
            self._infos = ray.get([a.info.remote() for a in self.actors], timeout=self.start_timeout)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise BatchError(f"the Ray workers did not start within {self.start_timeout:g} s: the cluster may "
                             f"lack free resources ({count} x {gpus:g} GPU; see `ray status`)") from None
        except ray.exceptions.RayError as exc:
            self.close()
            text = str(exc)
            hint = (" (install graphgen on every node: pip install 'graphgen[ray]')"
                    if "ModuleNotFoundError" in text or "No module named" in text else "")
            last = [line for line in text.splitlines() if line.strip()][-1:] or [type(exc).__name__]
            raise BatchError(f"a Ray worker failed to start: {last[0].strip()}{hint}") from None

    def info(self) -> list[dict[str, Any]]:
        """Each live actor's pid, node, GPUs, jobs run and models loaded."""
        return self.ray.get([a.info.remote() for a, ok in zip(self.actors, self.alive, strict=True) if ok])

    # ------------------------------------------------------------------ running

    def run(self, run: BatchRun, jobs: list[Job]) -> None:
        ray = self.ray
        exceptions = ray.exceptions
        source = ray.put(run.source)
        queue: collections.deque[Job] = collections.deque(jobs)
        requeued: set[int] = set()
        innocent: set[Any] = set()  # queued behind a job whose worker died: not at fault
        inflight: dict[Any, tuple[Job, int]] = {}
        per_worker: list[list[Any]] = [[] for _ in self.actors]
        depth = 1 + self.prefetch
        while True:
            if not run.stop.is_set():
                for index, actor in enumerate(self.actors):
                    while self.alive[index] and queue and len(per_worker[index]) < depth:
                        job = queue.popleft()
                        ref = actor.run_job.remote(source, run.payload(job))
                        inflight[ref] = (job, index)
                        per_worker[index].append(ref)
                        run.job_started(job, self.names[index])
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                job, index = inflight.pop(ref)
                name = self.names[index]
                refs = per_worker[index]
                position = refs.index(ref)
                refs.remove(ref)
                try:
                    outcome = ray.get(ref)
                except exceptions.RayActorError as exc:
                    # The worker's oldest job was running when it died; those queued behind it are not at fault.
                    at_fault = position == 0 and ref not in innocent
                    if at_fault:
                        innocent.update(refs)
                    innocent.discard(ref)
                    if not at_fault and job.index not in requeued:
                        requeued.add(job.index)
                        queue.appendleft(job)
                    else:
                        run.fail(job, name, f"its worker died while running it ({self.max_task_retries + 1} "
                                            f"tries): {_first_line(exc)}")
                    self._check_alive(run, index)
                    continue
                except exceptions.RayError as exc:
                    run.fail(job, name, f"{type(exc).__name__}: {_first_line(exc)}")
                    continue
                info = outcome.pop("worker", {})
                files = outcome.pop("file_bytes", {})
                if info.get("pid"):
                    run.worker_ready(name, info["pid"], info.get("node", ""), info.get("gpus", []))
                for event in outcome.pop("events", []):
                    run.node_event(job, name, event)
                run.finish(job, name, outcome, files=files)

    def _check_alive(self, run: BatchRun, index: int) -> None:
        ray = self.ray
        try:
            info = ray.get(self.actors[index].info.remote(), timeout=self.start_timeout)
        except ray.exceptions.RayError as exc:
            self.alive[index] = False
            run.worker_lost(self.names[index], _first_line(exc))
            return
        run.worker_ready(self.names[index], info["pid"], info["node"], info["gpus"])

    def cancel(self) -> None:
        return None  # jobs in flight finish; nothing new is handed out (run.stop)

    def close(self) -> None:
        """Stop the actors (and the Ray instance this executor started)."""
        ray = self.ray
        live = [a for a, ok in zip(self.actors, self.alive, strict=False) if ok]
        try:
            ray.get([a.cleanup.remote() for a in live], timeout=30)
        except Exception:  # a dead or stuck actor: its temporary folder stays  # noqa: BLE001
            pass
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already dead  # noqa: BLE001
                pass
        self.actors, self.names, self.alive, self._infos = [], [], [], []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]
