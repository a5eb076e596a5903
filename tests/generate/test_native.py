"""The mypyc-compiled generator (``tools/compile_native.py``) is the pure-Python one, faster.

Python imports ``planner.*.so`` before ``planner.py``, so once built, the compiled modules
are what every other test and ``mp2amp generate`` run. This checks that the build writes
the very bytes the pure-Python source writes for a seed (the pure run is a subprocess whose
import system only sees ``.py`` files under ``src/``: ``tools/pure_python.py``). That the
build is not stale: ``tests/test_native.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from generate_kit import tree_difference

import mp2amp.generate.planner
from mp2amp.generate import GenerateConfig, generate_project

ROOT = Path(__file__).resolve().parents[2]
COMPILED = str(mp2amp.generate.planner.__file__).endswith(
    sysconfig.get_config_var("EXT_SUFFIX") or ".so")
needs_build = pytest.mark.skipif(not COMPILED, reason="no compiled build: the generator "
                                 "runs as pure Python (tools/compile_native.py found no C compiler)")

# generate_project in a subprocess that imports only the .py sources (tools/pure_python.py)
_PURE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import pure_python
pure_python.install()
import mp2amp.generate.planner
from mp2amp.generate import GenerateConfig, generate_project
assert mp2amp.generate.planner.__file__.endswith(".py"), mp2amp.generate.planner.__file__
kwargs = json.loads(sys.argv[3])
kwargs["industries"] = tuple(kwargs["industries"])
generate_project(GenerateConfig(out=Path(sys.argv[2]), **kwargs))
"""

CONFIGS = [
    {"users": 120, "days": 3, "seed": 5, "dirty": 0.03, "industries": ["ecommerce", "b2b"]},
    {"users": 80, "days": 2, "seed": 11, "id_merge": "original", "legacy_time": True,
     "dirty": 0.0, "industries": ["fintech", "streaming"], "gzip": False},
]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@needs_build
@pytest.mark.parametrize("config", CONFIGS, ids=["dirty-simplified", "original-legacy-plain"])
def test_compiled_and_pure_python_write_the_same_bytes(tmp_path: Path,
                                                       config: dict[str, object]) -> None:
    pure = subprocess.run([sys.executable, "-c", _PURE, str(ROOT / "tools"), str(tmp_path / "pure"),
                           json.dumps(config)], capture_output=True, text=True, timeout=120)
    assert pure.returncode == 0, pure.stderr
    kwargs = dict(config, industries=tuple(config["industries"]))  # type: ignore[call-overload]
    generate_project(GenerateConfig(out=tmp_path / "native", **kwargs))
    pure_tree, native_tree = _tree(tmp_path / "pure"), _tree(tmp_path / "native")
    assert len(pure_tree) > 5
    assert sorted(pure_tree) == sorted(native_tree)
    assert pure_tree == native_tree, (
        "pure Python and compiled differ: " + tree_difference(tmp_path / "pure", tmp_path / "native"))
