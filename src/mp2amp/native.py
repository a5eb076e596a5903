"""Which modules ``make setup`` compiles with mypyc, and whether that build is stale.

``tools/compile_native.py`` compiles these modules to C extension modules beside their
sources, and Python imports a compiled module before its ``.py``: after an edit, until the
next ``make setup``, the old code would run. Each compiled package holds a manifest
(``native.json``: the SHA-256 of every compiled source) that tells.

The selection: the generator (all of it), the transform's per-event path, the identity
graph's passes and the Amplitude emulator's ingestion path (it shares the two cores with
the migration it measures). The rest stays Python on purpose: ``transform.mapping`` is
also a script (``python -m mp2amp.transform.mapping`` writes docs/mapping.md); the
stateful stages (dedup, sessions) gained nothing measurable; the identity store's
``ScratchDb`` is weakly referenced, which a compiled class does not allow; the emulator's
store does not compile (an int assigned to a float variable, fine in Python).

This module imports only the standard library: the build tool loads it by path, before
anything of mp2amp can be imported.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

PACKAGES: dict[str, tuple[str, ...] | None] = {
    "generate": None,  # every module but __init__
    "transform": ("events", "shapes", "insert_id", "values", "timeconv", "groups", "revenue",
                  "geo", "hotshard"),
    "identity": ("graph", "simplified", "original", "clustered", "unionfind", "table", "ids",
                 "junk"),
    "emulators/amplitude": ("validate", "ids", "ingest", "throttle", "segindex"),
}
"""Package (path under ``mp2amp``) -> the modules compiled, ``None`` for all but
``__init__``."""
MANIFEST = "native.json"


def selection_of(package: Path) -> tuple[str, ...] | None:
    """``PACKAGES``' entry for a package directory (matched by its last path parts)."""
    for key, selection in PACKAGES.items():
        parts = tuple(key.split("/"))
        if package.parts[-len(parts):] == parts:
            return selection
    raise KeyError(f"{package} is not one of the compiled packages")


def compiled_sources(package: Path) -> list[Path]:
    """The ``.py`` files of ``package`` that the build compiles."""
    selection = selection_of(package)
    if selection is None:
        return sorted(p for p in package.glob("*.py") if p.name != "__init__.py")
    return sorted(package / f"{name}.py" for name in selection)


def source_hashes(package: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in compiled_sources(package) if p.exists()}


def stale_native_modules(package: Path) -> list[str]:
    """The compiled sources of ``package`` that differ from those its build was made from
    (edited, added or removed since); empty without a compiled build."""
    manifest = package / MANIFEST
    if not manifest.exists():
        return []
    recorded = json.loads(manifest.read_text()).get("sources", {})
    current = source_hashes(package)
    return sorted(name for name in recorded.keys() | current.keys()
                  if recorded.get(name) != current.get(name))


def warn_if_stale(package: Path) -> None:
    """A RuntimeWarning naming the edited sources when ``package``'s build is stale."""
    if stale := stale_native_modules(package):
        warnings.warn(f"the compiled modules of {package} are older than {', '.join(stale)}; "
                      "the old code runs until `make setup` rebuilds them",
                      RuntimeWarning, stacklevel=3)
