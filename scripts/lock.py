"""Write constraints.txt: every package that `travelbot[model]` and torch pull in, pinned at
the version installed in .venv, where the tests ran. The test tools (the `test` extra) are
left out: a production install (`scripts/install.sh --production`, deploy/Dockerfile, the
systemd recipe) installs none of them, and the pins keep a build next month on what was
tested.

    scripts/install.sh && .venv/bin/python scripts/lock.py   # after changing a dependency

torch is pinned at the version of the CPU wheel the tests ran with, without its local label
(+cpu), so that the same line takes that wheel here and PyPI's build elsewhere. A CUDA host
that needs another build replaces that one line with TORCH_SPEC (scripts/install.sh, the
Dockerfile); torch's metadata then pins its Triton and CUDA libraries. Like `pip freeze`, the
file leaves out pip, setuptools and wheel: torch's releases disagree on setuptools (2.11 wants
<82, 2.13 >=77.0.3), so a pin would break one of them. tests/test_packaging.py checks that
the file matches .venv.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
EXTRAS = ("model",)  # the in-process engine; "test" is left out
TORCH = "torch"  # installed beside the project, not one of its requirements (see above)
TOOLS = {"pip", "setuptools", "wheel"}  # what `pip freeze` leaves out too (see above)
# Markers are evaluated for each Python the recipes may use (the image's Ubuntu 24.04 has
# 3.12, .venv here 3.11): what another one needs is pinned too where .venv has it
PYTHONS = ("3.11", "3.12", "3.13")

HEADER = """\
# Production pins: every package that travelbot[model] and torch pull in, at the version the
# tests ran with. Made by scripts/lock.py from .venv; do not edit by hand. Used as
# `pip install --constraint constraints.txt` by scripts/install.sh, deploy/Dockerfile and the
# systemd recipe; TORCH_SPEC replaces the torch line there (a CUDA host's own build).
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wanted(requirement: Requirement, extras: tuple[str, ...], pythons=PYTHONS) -> bool:
    """Whether a requirement applies with these extras of its parent, on any of `pythons`
    (None: only this interpreter)."""
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate({"extra": extra, **({"python_version": p} if p else {})})
        for extra in ("", *extras)
        for p in pythons or (None,)
    )


def project_requirements() -> list[Requirement]:
    """What pyproject.toml asks for (read there, not from .venv's possibly older install of
    the project), torch added."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [
        line for extra in EXTRAS for line in project["optional-dependencies"][extra]
    ]
    return [Requirement(line) for line in [*lines, TORCH]]


def runtime_packages() -> dict[str, str]:
    """{name as its metadata spells it: installed version} for the project's runtime closure,
    torch included, from the installed distributions' metadata. A requirement that is not
    installed is an error: run scripts/install.sh first."""
    pinned: dict[str, str] = {}
    seen: set[str] = set()
    todo = [(r, ()) for r in project_requirements() if _wanted(r, ())]
    while todo:
        requirement, parent_extras = todo.pop()
        key = f"{canonical(requirement.name)}{sorted(requirement.extras)}"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            if _wanted(requirement, parent_extras, pythons=None):
                raise
            continue  # needed on another Python only: nothing installed here to pin it by
        pinned[dist.metadata["Name"]] = dist.version
        extras = tuple(requirement.extras)
        todo += [(r, extras) for r in map(Requirement, dist.requires or ()) if _wanted(r, extras)]
    return pinned


def pins() -> dict[str, str]:
    """{name: version} as constraints.txt should pin them."""
    return {
        name: version.split("+")[0]  # the local label: 2.13.0+cpu -> 2.13.0 (see above)
        for name, version in sorted(runtime_packages().items(), key=lambda kv: canonical(kv[0]))
        if canonical(name) not in TOOLS
    }


def lock_text() -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in pins().items())


if __name__ == "__main__":
    LOCK.write_text(lock_text())
    print(f"{LOCK}: {len(pins())} pins", file=sys.stderr)
