"""Installed package versions, read from their metadata (nothing is imported)."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """name -> version for each of `names` that is installed; the others are left out."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
