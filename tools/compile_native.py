"""Compile the generator (``src/mp2amp/generate``) to C extension modules with mypyc.

Why: the generator is plain typed Python whose time goes to attribute access, small
functions and string building, which mypyc turns into C calls: 141k -> ~250k events per
CPU second on this machine (``make bench``), the same bytes for a seed (``tests/generate/
test_native.py`` compares the compiled and the pure-Python output).

The extension modules land next to their sources (Python imports ``planner.*.so`` before
``planner.py``), with one shared library ``mp2amp_native__mypyc*.so`` in ``src/``. A
manifest (``src/mp2amp/generate/native.json``) records the hash of every compiled source:
``make setup`` rebuilds when a source changes, and the suite fails on a stale build.

Without a C compiler the pure-Python modules stay in use (slower, same output): this
script says so and exits 0. Any other build failure is an error (exit 1).

    python tools/compile_native.py          # build if a source changed
    python tools/compile_native.py --clean  # remove the compiled modules
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = SRC / "mp2amp" / "generate"
MANIFEST = PACKAGE / "native.json"
GROUP = "mp2amp_native"
BUILD = ROOT / "build" / "native"


def sources() -> list[Path]:
    """The modules compiled: every generator module but the package's ``__init__``."""
    return sorted(p for p in PACKAGE.glob("*.py") if p.name != "__init__.py")


def source_hashes() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sources()}


def compiled_files() -> list[Path]:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return [*PACKAGE.glob(f"*{suffix}"), *SRC.glob(f"{GROUP}__mypyc*{suffix}")]


def clean() -> None:
    for path in compiled_files():
        path.unlink()
    MANIFEST.unlink(missing_ok=True)


def up_to_date() -> bool:
    if not MANIFEST.exists():
        return False
    recorded = json.loads(MANIFEST.read_text())
    return (recorded.get("python") == sys.implementation.cache_tag
            and recorded.get("sources") == source_hashes()
            and len(compiled_files()) == len(sources()) + 1)


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(os.environ.get("CC", cc).split()[0])


def build() -> None:
    from mypyc.build import mypycify  # dev dependency (ships with mypy)
    from setuptools import Distribution

    clean()
    modules = [str(p.relative_to(ROOT)) for p in sources()]
    extensions = mypycify(modules, group_name=GROUP, opt_level="3",
                          target_dir=str(BUILD / "c"))
    # A bare Distribution, not setup(): setup() would also read pyproject.toml, whose
    # [project] table is the package's, not this build's.
    dist = Distribution({"name": "mp2amp-native", "ext_modules": extensions,
                         "package_dir": {"": "src"}})
    dist.script_args = ["-q", "build_ext", "--inplace", "--build-temp", str(BUILD / "temp")]
    dist.parse_command_line()
    dist.run_commands()
    MANIFEST.write_text(json.dumps({"python": sys.implementation.cache_tag,
                                    "sources": source_hashes()}, indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    args = parser.parse_args()
    os.chdir(ROOT)  # mypyc reads pyproject.toml's [tool.mypy] and resolves paths from here
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / "lock", "w") as lock:
        # Two makes at once (`make test` beside `make demo`): one builds, the other waits
        # and then finds the build up to date, instead of deleting it halfway.
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _run(args.clean)


def _run(clean_only: bool) -> int:
    if clean_only:
        clean()
        return 0
    if up_to_date():
        return 0
    if _compiler() is None:
        clean()  # never leave a stale build behind
        print("compile_native: no C compiler found; the generator runs as pure Python "
              "(same output, about 1.8x slower). Install gcc and run `make setup`.",
              file=sys.stderr)
        return 0
    print(f"compile_native: compiling {len(sources())} generator modules with mypyc "
          "(about 30 s)...", file=sys.stderr)
    try:
        build()
    except (Exception, SystemExit) as exc:  # setuptools reports failures as SystemExit
        clean()
        print(f"compile_native: build failed ({exc}); no compiled modules are installed.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
