"""Device and precision resolution moved to `graphgen.models.devices` (one place for every family);
these names stay importable from here for packs written against the Kolors pack."""

from graphgen.models.devices import DEVICE_CHOICES, DTYPE_CHOICES, resolve_device, resolve_dtype

__all__ = ["DEVICE_CHOICES", "DTYPE_CHOICES", "resolve_device", "resolve_dtype"]
