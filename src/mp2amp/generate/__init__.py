"""A realistic synthetic Mixpanel project, with its ground truth (``mp2amp generate``)."""

import hashlib
import json
import warnings
from pathlib import Path


def stale_native_modules(package: Path = Path(__file__).parent) -> list[str]:
    """The generator sources that differ from those its compiled modules were built from.

    ``make setup`` compiles this package with mypyc (``tools/compile_native.py``), and
    Python imports a compiled module before its ``.py``: after an edit, until the next
    ``make setup``, the old code would run. The build's manifest (``native.json``: the
    SHA-256 of every compiled source) tells. Empty without a compiled build.
    """
    manifest = package / "native.json"
    if not manifest.exists():
        return []
    recorded = json.loads(manifest.read_text()).get("sources", {})
    current = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
               for p in package.glob("*.py") if p.name != "__init__.py"}
    return sorted(name for name in recorded.keys() | current.keys()
                  if recorded.get(name) != current.get(name))


if _stale := stale_native_modules():
    warnings.warn(f"the compiled generator is older than {', '.join(_stale)} (in "
                  f"{Path(__file__).parent}); the old code runs until `make setup` rebuilds it",
                  RuntimeWarning, stacklevel=2)

from mp2amp.generate.project import GenerateConfig, GenerateResult, generate_project  # noqa: E402

__all__ = ["GenerateConfig", "GenerateResult", "generate_project", "stale_native_modules"]
