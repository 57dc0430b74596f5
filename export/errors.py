"""The export stage's error types (caught once by the mnt-export CLI)."""

from mnt.runtime.console import EXIT_ACCURACY
from mnt.runtime.errors import MntError


class ExportError(MntError):
    """Raised by mnt.export: checkpoints, model building, export and parity gates."""


class CheckpointError(ExportError):
    """A checkpoint that is missing, corrupt, or does not match its own config."""


class AccuracyError(ExportError):
    """An accuracy gate failed: outputs drifted from their float64 reference beyond the
    build's thresholds (its own exit code, so scripts can tell drift from bad input)."""

    exit_code = EXIT_ACCURACY
