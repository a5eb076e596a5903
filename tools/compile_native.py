"""Compile the generator, the transform, the identity graph and the emulator's ingestion (mypyc).

Why: they are plain typed Python whose time goes to attribute access, small functions, dict
and string building, which mypyc turns into C calls (``make bench``): the generator runs at
~250k instead of ~141k events per CPU second, the transform pipeline at ~11 instead of
~12.5 us per event, identity pass 1 at ~1.0M instead of ~0.66M records per second, the
Amplitude emulator at ~130k instead of ~102k events per second. The output is the same bytes (``tests/generate/test_native.py`` and
``tests/transform/test_native.py`` compare the compiled and the pure-Python output).
Which modules: ``mp2amp.native.PACKAGES``.

The extension modules land next to their sources (Python imports ``planner.*.so`` before
``planner.py``), with one shared library ``mp2amp_native__mypyc*.so`` in ``src/``. A
manifest per package (``native.json``) records the hash of every compiled source:
``make setup`` rebuilds when a source changes, importing the package warns and the suite
fails on a stale build.

Without a C compiler the pure-Python modules stay in use (slower, same output): this
script says so and exits 0. Any other build failure is an error (exit 1), and so is a
generator expression mypyc would turn into a list (it would hold a whole stream at once).

    python tools/compile_native.py          # build if a source changed
    python tools/compile_native.py --clean  # remove the compiled modules
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import io
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
GROUP = "mp2amp_native"
BUILD = ROOT / "build" / "native"


def _selection() -> ModuleType:
    # By path: the build must run when the (maybe stale or half-built) package cannot import.
    spec = importlib.util.spec_from_file_location("_mp2amp_native", SRC / "mp2amp" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = _selection()
PACKAGES = [SRC / "mp2amp" / name for name in NATIVE.PACKAGES]


def sources() -> list[Path]:
    """The modules compiled, every package's."""
    return [path for package in PACKAGES for path in NATIVE.compiled_sources(package)]


def compiled_files() -> list[Path]:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    # Every extension module in the packages, not only the selected ones: a leftover of a
    # module no longer selected would still be imported before its .py.
    return [*(so for package in PACKAGES for so in package.glob(f"*{suffix}")),
            *SRC.glob(f"{GROUP}__mypyc*{suffix}")]


def manifests() -> list[Path]:
    return [package / NATIVE.MANIFEST for package in PACKAGES]


def clean() -> None:
    for path in compiled_files():
        path.unlink()
    for manifest in manifests():
        manifest.unlink(missing_ok=True)


def up_to_date() -> bool:
    for package in PACKAGES:
        manifest = package / NATIVE.MANIFEST
        if not manifest.exists():
            return False
        recorded = json.loads(manifest.read_text())
        if (recorded.get("python") != sys.implementation.cache_tag
                or recorded.get("sources") != NATIVE.source_hashes(package)):
            return False
    return len(compiled_files()) == len(sources()) + 1


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(os.environ.get("CC", cc).split()[0])


def materialized_streams(report: str) -> list[str]:
    """mypyc's "Treating generator comprehension as list" warnings in its build output."""
    return [line.split(": warning:")[0] for line in report.splitlines()
            if "Treating generator comprehension as list" in line]


def build() -> None:
    from mypyc.build import mypycify  # dev dependency (ships with mypy)
    from setuptools import Distribution

    clean()
    modules = [str(p.relative_to(ROOT)) for p in sources()]
    # the sources as this build reads them: one edited while it runs stays stale (rebuilt
    # next time), not recorded as built
    hashes = {package: NATIVE.source_hashes(package) for package in PACKAGES}
    report = io.StringIO()
    try:
        with contextlib.redirect_stdout(report):  # mypyc prints its warnings there
            extensions = mypycify(modules, group_name=GROUP, opt_level="3",
                                  target_dir=str(BUILD / "c"))
    finally:  # its errors too, before it exits: they say what to fix
        print(report.getvalue(), end="")
    if listed := materialized_streams(report.getvalue()):
        raise RuntimeError(
            "mypyc would turn these generator expressions into lists, which holds a whole "
            "stream in memory (a spilled graph's IDs, a staged window): write a generator "
            "function or an explicit list comprehension instead: " + "; ".join(listed))
    # A bare Distribution, not setup(): setup() would also read pyproject.toml, whose
    # [project] table is the package's, not this build's.
    dist = Distribution({"name": "mp2amp-native", "ext_modules": extensions,
                         "package_dir": {"": "src"}})
    dist.script_args = ["-q", "build_ext", "--inplace", "--build-temp", str(BUILD / "temp")]
    dist.parse_command_line()
    dist.run_commands()
    for package in PACKAGES:
        (package / NATIVE.MANIFEST).write_text(json.dumps(
            {"python": sys.implementation.cache_tag,
             "sources": hashes[package]}, indent=1) + "\n")


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
        print("compile_native: no C compiler found; the generator and the transform run as "
              "pure Python (same output, slower). Install gcc and run `make setup`.",
              file=sys.stderr)
        return 0
    print(f"compile_native: compiling {len(sources())} modules with mypyc (about a minute)...",
          file=sys.stderr)
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
