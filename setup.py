"""The package list, derived from the folders: each of the design card's top-level folders
is `mnt.<folder>`, and each folder under it that holds an `__init__.py` its subpackage.
Everything else about the project is in pyproject.toml."""

from pathlib import Path

from setuptools import setup

ROOTS = ("export", "runtime", "calibration", "kernels")


def packages() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted("mnt." + ".".join(init.parent.relative_to(here).parts)
                  for root in ROOTS for init in (here / root).rglob("__init__.py"))


if __name__ == "__main__":  # as setuptools runs it; tests import `packages` alone
    setup(packages=packages(), package_dir={f"mnt.{root}": root for root in ROOTS})
