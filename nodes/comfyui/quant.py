"""8-/4-bit ChatGLM3 weights (kijai's `quant8`/`quant4` precisions) through optimum-quanto.

optimum-quanto (Hugging Face, Apache-2.0) quantises the weights of `nn.Linear` layers in place and
runs on the CPU as well as on CUDA/MPS. It is an optional dependency (`pip install optimum-quanto`,
or the `quant` extra): without it these precisions are refused with a clear message, never replaced
by another precision.

Only the Linear layers of the transformer (attention and MLP, as ChatGLM's own `quantize(bits)`
does) are quantised; embeddings and norms keep the load dtype. Weights are quantised per output
channel (8-bit) or per group of 128 inputs (4-bit); activations stay in floating point.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QUANT_BITS", "QuantizationUnavailable", "quantization_available", "quantize_text_encoder",
           "require_quantization"]

QUANT_BITS = {"quant8": 8, "quant4": 4}


class QuantizationUnavailable(RuntimeError):
    """The quantisation library is missing or cannot run here."""


def quantization_available() -> bool:
    """Whether optimum-quanto can be imported."""
    try:
        import optimum.quanto  # noqa: F401
    except Exception:
        return False
    return True


def require_quantization(precision: str) -> None:
    """Raise `QuantizationUnavailable` (naming the precision and what to do) unless optimum-quanto imports."""
    if precision not in QUANT_BITS:
        raise ValueError(f"unknown quantised precision {precision!r}; use one of {', '.join(QUANT_BITS)}")
    if not quantization_available():
        raise _unavailable(precision, "is not installed")


def _unavailable(precision: str, reason: str) -> QuantizationUnavailable:
    bits = QUANT_BITS[precision]
    return QuantizationUnavailable(
        f"precision {precision!r} loads ChatGLM3 with {bits}-bit weights through optimum-quanto, which {reason}; "
        "install it (`pip install optimum-quanto`, or graphgen's `quant` extra), or set precision to 'fp16' "
        "(about 12.5 GB for the full ChatGLM3 instead of about "
        f"{'8' if bits == 8 else '4-5'} GB)")


def quantize_text_encoder(model: Any, precision: str) -> Any:
    """Quantise a loaded ChatGLM model's transformer Linear weights in place and return it.

    Raises:
        QuantizationUnavailable: optimum-quanto is not installed or fails to quantise here.
        ValueError: an unknown precision.
    """
    if precision not in QUANT_BITS:
        raise ValueError(f"unknown quantised precision {precision!r}; use one of {', '.join(QUANT_BITS)}")
    try:
        from optimum.quanto import freeze, qint4, qint8, quantize
    except ImportError:
        raise _unavailable(precision, "is not installed") from None
    target = getattr(model, "encoder", None) or model
    try:
        quantize(target, weights=qint8 if QUANT_BITS[precision] == 8 else qint4)
        freeze(target)
    except Exception as exc:  # e.g. a torch version quanto does not support
        raise _unavailable(precision, f"failed here ({type(exc).__name__}: {exc})") from exc
    return model
