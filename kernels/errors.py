"""The kernels' error type: a missing compiler or CUDA toolkit, a kernel library that is
absent or does not match its kernels.json, or shapes a kernel does not support."""

from mnt.runtime.errors import MntError


class KernelError(MntError):
    """Raised by mnt.kernels (the mnt-export CLI catches it like any MntError)."""
