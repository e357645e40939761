"""`/prompt`, `/queue`, `/interrupt`, `/history` and `/jobs`: queueing prompts and reading results."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import uuid
from collections.abc import Iterable
from functools import partial
from typing import Any

from aiohttp import web

from graphgen.errors import Issue, WorkflowError
from graphgen.server.jobs import FINISHED, Job
from graphgen.server.responses import BadRequest, error_response, json_response, read_json
from graphgen.server.state import ServerState, state_of

log = logging.getLogger("graphgen.server")
PROMPT_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
UNKNOWN_TYPE_CODES = ("unknown_node_type", "ambiguous_node_type")
JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


# -- validation errors in ComfyUI's shape ------------------------------------------------------------

def _dependent_outputs(prompt: dict[str, Any], state: ServerState) -> dict[str, list[str]]:
    """For each node, the output nodes that (transitively) use it."""
    consumers: dict[str, set[str]] = {}
    outputs = []
    for node_id, entry in prompt.items():
        if not isinstance(entry, dict):
            continue
        class_type = entry.get("class_type")
        if isinstance(class_type, str) and class_type in state.engine.registry:
            if state.engine.registry.get(class_type).output_node:
                outputs.append(str(node_id))
        for value in (entry.get("inputs") or {}).values() if isinstance(entry.get("inputs"), dict) else ():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)):
                consumers.setdefault(str(value[0]), set()).add(str(node_id))
    result: dict[str, list[str]] = {}
    for output in outputs:
        stack, seen = [output], {output}
        while stack:  # walk upstream: every node this output depends on
            current = stack.pop()
            result.setdefault(current, []).append(output)
            entry = prompt.get(current)
            inputs = entry.get("inputs") if isinstance(entry, dict) else None
            for value in (inputs or {}).values() if isinstance(inputs, dict) else ():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)):
                    source = str(value[0])
                    if source not in seen:
                        seen.add(source)
                        stack.append(source)
    return result


def node_errors(issues: Iterable[Issue], prompt: dict[str, Any], state: ServerState) -> dict[str, Any]:
    """`{node_id: {errors: [{type, message, details, extra_info}], dependent_outputs, class_type}}`."""
    dependents = _dependent_outputs(prompt, state)
    out: dict[str, Any] = {}
    for issue in issues:
        if issue.node_id is None:
            continue
        entry = out.setdefault(issue.node_id, {"errors": [], "dependent_outputs": dependents.get(issue.node_id, []),
                                               "class_type": issue.node_type or ""})
        details = f"{issue.input}: {issue.hint}" if issue.input and issue.hint else (issue.hint or issue.input or "")
        extra: dict[str, Any] = {"hint": issue.hint}
        if issue.input:
            extra["input_name"] = issue.input
            node = prompt.get(issue.node_id)
            inputs = node.get("inputs") if isinstance(node, dict) else None
            if isinstance(inputs, dict) and issue.input in inputs:
                extra["received_value"] = inputs[issue.input]
        entry["errors"].append({"type": issue.code, "message": issue.message, "details": details, "extra_info": extra})
    return out


def invalid_prompt_response(exc: WorkflowError, prompt: dict[str, Any], state: ServerState) -> web.Response:
    issues = exc.issues
    errors = node_errors(issues, prompt, state)
    unknown = [i for i in issues if i.code in UNKNOWN_TYPE_CODES]
    malformed = [i for i in issues if i.code == "invalid_workflow"]
    summary = "\n".join(str(i) for i in issues[:20]) + (f"\n... and {len(issues) - 20} more" if len(issues) > 20 else "")
    if unknown:
        first = unknown[0]
        kind, message = "invalid_prompt", f"Cannot execute because node {first.node_type} does not exist."
        details = f"Node ID '#{first.node_id}'" + (f"; {first.hint}" if first.hint else "")
    elif malformed:
        kind, message, details = "invalid_prompt", f"Invalid prompt: {malformed[0].message}", summary
    elif errors:
        kind, message, details = "prompt_outputs_failed_validation", "Prompt outputs failed validation", summary
    elif any(i.code == "no_output_node" for i in issues):
        kind, message, details = "prompt_no_outputs", "Prompt has no outputs", summary
    else:
        kind, message, details = "invalid_prompt", f"Invalid prompt: {issues[0].message}" if issues else \
            "Invalid prompt", summary
    return error_response(400, kind, message, details, errors)


# -- /prompt -----------------------------------------------------------------------------------------

async def get_prompt(request: web.Request) -> web.Response:
    return json_response({"exec_info": {"queue_remaining": state_of(request).queue.remaining()}})


def _workflow_data(prompt: dict[str, Any], extra_data: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"source_format": "comfyui-api"}
    pnginfo = extra_data.get("extra_pnginfo")
    if isinstance(pnginfo, dict) and isinstance(pnginfo.get("workflow"), dict):
        metadata["comfyui_workflow"] = pnginfo["workflow"]  # saved PNGs reopen as this graph in the editor
    return {"format": "graphgen", "version": 1, "metadata": metadata, "nodes": prompt}


async def post_prompt(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("invalid_prompt", "the request body must be a JSON object with a 'prompt'")
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("no_prompt", "No prompt provided", "send {\"prompt\": {node id: {class_type, inputs}}}")
    if not isinstance(prompt, dict) or not prompt:
        raise BadRequest("invalid_prompt", "the prompt must be a non-empty object of nodes",
                         "an API-format prompt: {\"3\": {\"class_type\": ..., \"inputs\": {...}}}")
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        raise BadRequest("invalid_prompt", "extra_data must be an object")
    client_id = body.get("client_id")
    if not isinstance(client_id, str) or not client_id or len(client_id) > 128:
        client_id = None
    extra_data = {**extra_data, "client_id": client_id} if client_id else dict(extra_data)
    targets = body.get("partial_execution_targets")
    if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
        raise BadRequest("invalid_prompt", "partial_execution_targets must be a list of node ids")
    if targets is not None and not targets:
        raise BadRequest("prompt_no_outputs", "partial_execution_targets is empty, so nothing would run",
                         "leave it out to run every output node, or list the output nodes to run")

    prompt_id = body.get("prompt_id")
    if isinstance(prompt_id, str) and PROMPT_ID.match(prompt_id):
        # Claimed now, before validation yields to other requests: of concurrent prompts with one
        # id exactly one is queued, and none replaces another's history.
        if not state.queue.reserve(prompt_id):
            raise BadRequest("duplicate_prompt_id", f"prompt_id {prompt_id!r} is already in use",
                             "each prompt needs its own prompt_id; leave it out to get a new one")
    else:
        prompt_id = str(uuid.uuid4())
        state.queue.reserve(prompt_id)
    try:
        return await _queue_prompt(state, body, prompt, extra_data, client_id, targets, prompt_id)
    finally:
        state.queue.release(prompt_id)  # a no-op once queued


async def _queue_prompt(state: ServerState, body: dict[str, Any], prompt: dict[str, Any], extra_data: dict[str, Any],
                        client_id: str | None, targets: list[str] | None, prompt_id: str) -> web.Response:
    loop = asyncio.get_running_loop()
    try:
        # Partially valid prompts run their valid outputs (ComfyUI's behaviour); the invalid
        # ones come back as node_errors.
        prepared = await loop.run_in_executor(state.validator, partial(state.engine.prepare,
                                              _workflow_data(prompt, extra_data), partial=True))
    except WorkflowError as exc:
        return invalid_prompt_response(exc, prompt, state)
    except Exception as exc:  # a validation bug must still answer in shape, not with a 500
        log.exception("validating a prompt failed")
        raise BadRequest("invalid_prompt", f"the prompt could not be validated: {type(exc).__name__}: {exc}") from None
    if targets:
        unknown = [t for t in targets if t not in prepared.output_nodes and t not in prepared.invalid_outputs]
        if unknown:
            raise BadRequest("invalid_prompt", f"partial_execution_targets {unknown} are not output nodes of the prompt")
        targets = [t for t in targets if t in prepared.output_nodes]
        if not targets:
            return invalid_prompt_response(WorkflowError(prepared.issues), prompt, state)

    number = body.get("number")
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        number = state.queue.next_number(front=body.get("front") is True)
    job = Job(number=number, prompt_id=prompt_id, prompt=prompt, extra_data=extra_data, client_id=client_id,
              prepared=prepared, outputs_to_execute=list(targets or prepared.output_nodes), targets=targets or None)
    state.queue.submit(job)
    errors = node_errors(prepared.issues, prompt, state) if prepared.issues else {}
    return json_response({"prompt_id": prompt_id, "number": number, "node_errors": errors})


# -- /queue, /interrupt ----------------------------------------------------------------------------

async def get_queue(request: web.Request) -> web.Response:
    running, pending = state_of(request).queue.snapshot()
    return json_response({"queue_running": [j.queue_entry() for j in running],
                          "queue_pending": [j.queue_entry() for j in pending]})


def _ids(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise BadRequest("invalid_request", "'delete' must be a list of prompt ids")
    return [str(v) for v in value]


async def _clear_or_delete(request: web.Request, clear: Any, delete: Any) -> web.Response:
    """`{"clear": true}` and/or `{"delete": [ids]}`, the body of POST /queue and POST /history."""
    body = await read_json(request, allow_empty=True) or {}
    if not isinstance(body, dict):
        raise BadRequest("invalid_request", "send {\"clear\": true} or {\"delete\": [prompt ids]}")
    if body.get("clear") is True:
        clear()
    if "delete" in body:
        delete(_ids(body["delete"]))
    return web.Response(status=200)


async def post_queue(request: web.Request) -> web.Response:
    queue = state_of(request).queue
    return await _clear_or_delete(request, queue.clear_pending, queue.delete_pending)


async def post_interrupt(request: web.Request) -> web.Response:
    body = await read_json(request, allow_empty=True)
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    state_of(request).queue.interrupt(prompt_id if isinstance(prompt_id, str) else None)
    return web.Response(status=200)


# -- /history ------------------------------------------------------------------------------------------

def _int_query(request: web.Request, name: str, default: int | None, low: int = 0, high: int = 1_000_000) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return max(low, min(high, int(raw)))
    except ValueError:
        raise BadRequest("invalid_request", f"{name} must be an integer") from None


async def get_history(request: web.Request) -> web.Response:
    queue = state_of(request).queue
    jobs = queue.history(_int_query(request, "max_items", None), _int_query(request, "offset", 0) or 0)
    return json_response({job.prompt_id: job.history_entry() for job in jobs})


async def get_history_item(request: web.Request) -> web.Response:
    job = state_of(request).queue.finished(request.match_info["prompt_id"])
    return json_response({job.prompt_id: job.history_entry()} if job is not None else {})


async def post_history(request: web.Request) -> web.Response:
    queue = state_of(request).queue
    return await _clear_or_delete(request, queue.clear_history, queue.delete_history)


# -- /jobs ---------------------------------------------------------------------------------------------

async def get_jobs(request: web.Request) -> web.Response:
    queue = state_of(request).queue
    raw = request.query.get("status", "")
    wanted = {s.strip() for s in raw.split(",") if s.strip()} or set(JOB_STATUSES)
    limit = _int_query(request, "limit", 200, 1, 10_000) or 200
    offset = _int_query(request, "offset", 0) or 0
    jobs = [job for job in queue.all_jobs() if job.status in wanted]
    if request.query.get("sort_order") == "asc":
        jobs.reverse()
    page = jobs[offset: offset + limit]
    return json_response({"jobs": [job.job_summary() for job in page],
                          "pagination": {"offset": offset, "limit": limit, "total": len(jobs),
                                         "has_more": offset + len(page) < len(jobs)}})


async def get_job(request: web.Request) -> web.Response:
    job = state_of(request).queue.get(request.match_info["job_id"])
    if job is None:
        return error_response(404, "not_found", f"no job {request.match_info['job_id']!r}")
    return json_response(job.job_detail())


def _cancel(state: ServerState, job_id: str) -> bool:
    job = state.queue.get(job_id)
    if job is None or job.status in FINISHED:
        return False
    if job.status == "pending":
        return state.queue.delete_pending([job_id]) > 0 or state.queue.interrupt(job_id)
    return state.queue.interrupt(job_id)


async def post_job_cancel(request: web.Request) -> web.Response:
    state = state_of(request)
    job_id = request.match_info["job_id"]
    if state.queue.get(job_id) is None:
        return error_response(404, "not_found", f"no job {job_id!r}")
    return json_response({"cancelled": _cancel(state, job_id)})


async def post_jobs_cancel(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request)
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        raise BadRequest("invalid_request", "send {\"job_ids\": [ids]}")
    return json_response({"cancelled": [str(i) for i in ids if _cancel(state, str(i))]})


async def post_free(request: web.Request) -> web.Response:
    body = await read_json(request, allow_empty=True)
    if isinstance(body, dict) and (body.get("unload_models") or body.get("free_memory")):
        state_of(request).queue.request_free()
    return web.Response(status=200)


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/prompt", get_prompt), ("POST", "/prompt", post_prompt),
    ("GET", "/queue", get_queue), ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("GET", "/history", get_history), ("GET", "/history/{prompt_id}", get_history_item),
    ("POST", "/history", post_history),
    ("GET", "/jobs", get_jobs), ("POST", "/jobs/cancel", post_jobs_cancel), ("GET", "/jobs/{job_id}", get_job),
    ("POST", "/jobs/{job_id}/cancel", post_job_cancel),
    ("POST", "/free", post_free),
]
