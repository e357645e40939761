"""ComfyUI's sampler × scheduler names mapped onto diffusers schedulers, and nothing silently substituted.

A ComfyUI ``sampler_name`` picks the solver (a diffusers scheduler class and its solver keys), a
``scheduler`` picks the noise levels (diffusers' sigma options and timestep spacing):

============== =================================================================================
scheduler      diffusers equivalent
============== =================================================================================
normal         ``timestep_spacing="linspace"``: ComfyUI spaces timesteps evenly from 999 to 0,
               the same timesteps (equal at e.g. 4 or 10 steps; at other counts ComfyUI
               interpolates log-sigmas where diffusers interpolates sigmas: a tiny difference)
simple         ``timestep_spacing="trailing"``: every (1000/steps)-th training sigma from the top
sgm_uniform    ``timestep_spacing="trailing"`` (ComfyUI's fractional timesteps rounded)
karras         ``use_karras_sigmas=True`` (ρ = 7 between the model's sigma range)
exponential    ``use_exponential_sigmas=True``
beta           ``use_beta_sigmas=True`` (α = β = 0.6)
============== =================================================================================

Sigma options exist only on schedulers that take them; a combination without a faithful
diffusers equivalent (``euler_ancestral`` + ``karras``, ``lcm`` + ``beta``...) is refused at
validation with the list of what is supported, as is ``dpmpp_sde`` when ``torchsde`` (the
Brownian-tree noise diffusers' ``DPMSolverSDEScheduler`` needs) is not installed.

The base config (betas, training steps, prediction type) is the model family's; only the keys
above and the solver's own keys change.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .schedulers import build_scheduler, scheduler_parameters

__all__ = ["SAMPLERS", "SCHEDULERS", "SD_SCHEDULER_CONFIG", "check_combination", "make_comfy_scheduler",
           "supported_combinations"]

#: The SD1.5 / SDXL releases' noise schedule (their ``scheduler_config.json``).
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading", "clip_sample": False,
    "set_alpha_to_one": False, "interpolation_type": "linear", "use_karras_sigmas": False,
}


@dataclass(frozen=True)
class SamplerSpec:
    """A ComfyUI sampler name as a diffusers scheduler class plus solver keys."""

    class_name: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    needs_module: str | None = None


SAMPLERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec("EulerDiscreteScheduler"),
    "euler_ancestral": SamplerSpec("EulerAncestralDiscreteScheduler"),
    "heun": SamplerSpec("HeunDiscreteScheduler"),
    "dpm_2": SamplerSpec("KDPM2DiscreteScheduler"),
    "dpm_2_ancestral": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "dpmpp_2m": SamplerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": SamplerSpec("DPMSolverMultistepScheduler",
                                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "midpoint"}),
    "dpmpp_sde": SamplerSpec("DPMSolverSDEScheduler", needs_module="torchsde"),
    "lcm": SamplerSpec("LCMScheduler"),
    "ddim": SamplerSpec("DDIMScheduler"),
    "uni_pc": SamplerSpec("UniPCMultistepScheduler"),
    "deis": SamplerSpec("DEISMultistepScheduler"),
}

#: scheduler name → (config keys, the constructor parameter that must exist for it).
SCHEDULERS: dict[str, tuple[dict[str, Any], str]] = {
    "normal": ({"timestep_spacing": "linspace"}, "timestep_spacing"),
    "karras": ({"use_karras_sigmas": True, "timestep_spacing": "linspace"}, "use_karras_sigmas"),
    "exponential": ({"use_exponential_sigmas": True, "timestep_spacing": "linspace"}, "use_exponential_sigmas"),
    "sgm_uniform": ({"timestep_spacing": "trailing"}, "timestep_spacing"),
    "simple": ({"timestep_spacing": "trailing"}, "timestep_spacing"),
    "beta": ({"use_beta_sigmas": True, "timestep_spacing": "linspace"}, "use_beta_sigmas"),
}



def _unsupported_reason(sampler: str, scheduler: str) -> str | None:
    spec = SAMPLERS[sampler]
    if spec.needs_module and importlib.util.find_spec(spec.needs_module) is None:
        return f"sampler {sampler!r} needs the {spec.needs_module} package (pip install {spec.needs_module})"
    if SCHEDULERS[scheduler][1] not in scheduler_parameters(spec.class_name):
        return f"diffusers' {spec.class_name} has no {scheduler!r} noise schedule"
    return None


def supported_combinations() -> dict[str, list[str]]:
    """sampler → the schedulers it runs with here."""
    return {s: [n for n in SCHEDULERS if _unsupported_reason(s, n) is None] for s in SAMPLERS}


def check_combination(sampler: str, scheduler: str) -> str | None:
    """None when supported, else one line saying why and what is supported."""
    if sampler not in SAMPLERS:
        return f"unknown sampler {sampler!r}; supported: {', '.join(SAMPLERS)}"
    if scheduler not in SCHEDULERS:
        return f"unknown scheduler {scheduler!r}; supported: {', '.join(SCHEDULERS)}"
    reason = _unsupported_reason(sampler, scheduler)
    if reason is None:
        return None
    table = supported_combinations()
    with_sampler = ", ".join(table[sampler]) or "none here"
    with_scheduler = ", ".join(s for s, names in table.items() if scheduler in names) or "none here"
    return (f"{sampler} + {scheduler} has no faithful diffusers equivalent ({reason}); {sampler} runs with: "
            f"{with_sampler}; {scheduler} runs with: {with_scheduler}")


def make_comfy_scheduler(sampler: str, scheduler: str, base_config: Mapping[str, Any] | None = None) -> Any:
    """A fresh diffusers scheduler for a ComfyUI sampler × scheduler pair.

    Args:
        sampler: ComfyUI ``sampler_name``.
        scheduler: ComfyUI ``scheduler``.
        base_config: The model family's scheduler config (default: SD1.5/SDXL's).

    Raises:
        ValueError: An unsupported combination (the message lists the supported ones).
    """
    problem = check_combination(sampler, scheduler)
    if problem:
        raise ValueError(problem)
    spec = SAMPLERS[sampler]
    return build_scheduler(spec.class_name, SD_SCHEDULER_CONFIG if base_config is None else base_config,
                           spec.extra, SCHEDULERS[scheduler][0])
