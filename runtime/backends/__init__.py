"""Inference backends behind one interface (activate / infer / deactivate)."""

from mnt.runtime.backends.base import Backend, resolve_shape

__all__ = ["Backend", "resolve_shape"]
