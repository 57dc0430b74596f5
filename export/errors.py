"""The export stage's error type (caught once by the mnt-export CLI)."""

from mnt.runtime.errors import MntError


class ExportError(MntError):
    """Raised by mnt.export: checkpoints, model building, export and parity gates."""


class CheckpointError(ExportError):
    """A checkpoint that is missing, corrupt, or does not match its own config."""
