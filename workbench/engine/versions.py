"""Process-wide patches of a library's internals are written against a range of its versions: outside it
they are not applied, and the run's log says so in one line (never a silent no-op, never a wrong patch)."""

from __future__ import annotations

from importlib.metadata import version

from packaging.version import Version


def outside_range(package: str, minimum: str, below: str, patch: str) -> str | None:
    """None when the installed `package` is in [minimum, below); else the line saying `patch` is skipped."""
    installed = version(package)
    if Version(minimum) <= Version(installed) < Version(below):
        return None
    return (f"{patch}: written for {package} >={minimum},<{below}, but {installed} is installed; "
            f"not applied")
