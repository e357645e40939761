"""Diffusers schedulers by name, all built from Kolors' own scheduler config.

Kolors was trained with 1100 timesteps and ``beta_end=0.014`` (SDXL: 1000 and 0.012), so a
scheduler built with diffusers' defaults gives wrong images. Every scheduler here starts from
:data:`KOLORS_SCHEDULER_CONFIG` (or a config the caller read from a model folder) and only the
solver-specific keys of :data:`SCHEDULERS` are changed.

Names are ComfyUI-style (``euler``, ``dpmpp_2m_karras``, ...); the class-style names of kijai's
ComfyUI-KwaiKolorsWrapper (``EulerDiscreteScheduler``, ``DPMSolverMultistepScheduler_SDE_karras``,
...) are accepted as aliases, with the same meaning as in that wrapper.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KOLORS_SCHEDULER_CONFIG",
    "SCHEDULERS",
    "SCHEDULER_ALIASES",
    "SchedulerSpec",
    "make_scheduler",
    "resolve_scheduler_name",
    "scheduler_names",
]

#: Kolors' scheduler config (``Kwai-Kolors/Kolors-diffusers/scheduler/scheduler_config.json``).
KOLORS_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.014,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1100,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


@dataclass(frozen=True)
class SchedulerSpec:
    """How one scheduler name is built.

    Attributes:
        class_name: Name of the scheduler class in ``diffusers``.
        extra: Config keys that override the base config.
        description: One line for UIs.
    """

    class_name: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


#: Scheduler names → how to build them.
SCHEDULERS: dict[str, SchedulerSpec] = {
    "euler": SchedulerSpec("EulerDiscreteScheduler", {}, "Euler (Kolors' default)"),
    "euler_ancestral": SchedulerSpec("EulerAncestralDiscreteScheduler", {}, "Euler ancestral (stochastic)"),
    "dpmpp_2m": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
        "DPM++ 2M",
    ),
    "dpmpp_2m_karras": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M with Karras sigmas",
    ),
    "dpmpp_2m_sde": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
        "DPM++ 2M SDE (stochastic)",
    ),
    "dpmpp_2m_sde_karras": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M SDE with Karras sigmas (stochastic)",
    ),
    "ddim": SchedulerSpec("DDIMScheduler", {}, "DDIM (eta 0)"),
    "unipc": SchedulerSpec("UniPCMultistepScheduler", {}, "UniPC"),
    "deis": SchedulerSpec("DEISMultistepScheduler", {}, "DEIS"),
}

#: kijai's ComfyUI-KwaiKolorsWrapper names → our names.
SCHEDULER_ALIASES: dict[str, str] = {
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_ancestral",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
    "DPMSolverMultistepScheduler_SDE_karras": "dpmpp_2m_sde_karras",
    "UniPCMultistepScheduler": "unipc",
    "DEISMultistepScheduler": "deis",
    "DDIMScheduler": "ddim",
}

# Keys of a saved scheduler config that are bookkeeping, not constructor arguments.
_META_KEYS = ("_class_name", "_diffusers_version", "_use_default_values")


@functools.cache
def scheduler_parameters(class_name: str) -> frozenset[str]:
    """The constructor arguments of diffusers' scheduler `class_name` (none if it cannot be imported)."""
    import diffusers

    try:
        cls = getattr(diffusers, class_name)
        return frozenset(inspect.signature(cls.__init__).parameters) - {"self"}
    except Exception:  # a scheduler whose optional dependency is missing
        return frozenset()


def build_scheduler(class_name: str, base_config: Mapping[str, Any], *changes: Mapping[str, Any]) -> Any:
    """A fresh diffusers `class_name` from `base_config` (its bookkeeping keys dropped) with `changes`
    applied in order.

    Only the keys the class accepts are passed: a config written for Euler carries keys that DPM or
    DDIM do not know (diffusers would log a warning for each).
    """
    import diffusers

    cls = getattr(diffusers, class_name)
    config = dict(base_config)
    for key in _META_KEYS:
        config.pop(key, None)
    for change in changes:
        config.update(change)
    accepted = scheduler_parameters(class_name)
    return cls.from_config({k: v for k, v in config.items() if k in accepted})


def scheduler_names(include_aliases: bool = False) -> list[str]:
    """Lists the accepted scheduler names.

    Args:
        include_aliases: Also list kijai's class-style aliases.

    Returns:
        Canonical names first (in table order), then the aliases when asked for.
    """
    names = list(SCHEDULERS)
    if include_aliases:
        names += list(SCHEDULER_ALIASES)
    return names


def resolve_scheduler_name(name: str) -> str:
    """Maps a canonical name or an alias to the canonical name.

    Args:
        name: A name from :data:`SCHEDULERS` or :data:`SCHEDULER_ALIASES`.

    Returns:
        The canonical name.

    Raises:
        ValueError: If the name is unknown; the message lists the valid names.
    """
    if name in SCHEDULERS:
        return name
    if name in SCHEDULER_ALIASES:
        return SCHEDULER_ALIASES[name]
    valid = ", ".join(scheduler_names(include_aliases=True))
    raise ValueError(f"unknown scheduler {name!r}; valid names: {valid}")


def make_scheduler(name: str, base_config: Mapping[str, Any] | None = None) -> Any:
    """Builds a fresh diffusers scheduler for Kolors.

    Args:
        name: Canonical name (``euler``, ``euler_ancestral``, ``dpmpp_2m``, ``dpmpp_2m_karras``,
            ``dpmpp_2m_sde``, ``dpmpp_2m_sde_karras``, ``ddim``, ``unipc``, ``deis``) or one of
            kijai's aliases.
        base_config: The config to start from, e.g. a model folder's ``scheduler_config.json`` or
            ``scheduler.config``; defaults to :data:`KOLORS_SCHEDULER_CONFIG`. Its ``_class_name``
            is ignored: ``name`` picks the class.

    Returns:
        A new scheduler instance (schedulers are stateful: build one per sampling run).

    Raises:
        ValueError: If the name is unknown.
    """
    spec = SCHEDULERS[resolve_scheduler_name(name)]
    return build_scheduler(spec.class_name, KOLORS_SCHEDULER_CONFIG if base_config is None else base_config,
                           spec.extra)
