"""The mypyc build (``tools/compile_native.py``) is of the current sources, and a stale one
is reported (``mp2amp.native``). That the compiled modules give the pure-Python output:
``tests/generate/test_native.py`` and ``tests/transform/test_native.py``."""

from __future__ import annotations

import importlib.util
import json
import sysconfig
import warnings
from pathlib import Path
from types import ModuleType

import pytest

import mp2amp.emulators.amplitude.validate
import mp2amp.generate.planner
import mp2amp.identity.graph
import mp2amp.identity.store
import mp2amp.transform.events
import mp2amp.transform.mapping
from mp2amp import native

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
COMPILED = str(mp2amp.generate.planner.__file__).endswith(SUFFIX)
needs_build = pytest.mark.skipif(not COMPILED, reason="no compiled build: pure Python "
                                 "(tools/compile_native.py found no C compiler)")


def _compile_native() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compile_native",
                                                  ROOT / "tools" / "compile_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_build
def test_the_compiled_build_is_of_the_current_sources() -> None:
    tool = _compile_native()
    assert tool.up_to_date(), ("the compiled modules are stale (a source changed since they "
                               "were built): run `make setup`")
    assert len(tool.PACKAGES) == len(native.PACKAGES) == 4
    for package in tool.PACKAGES:
        recorded = json.loads((package / native.MANIFEST).read_text())["sources"]
        assert sorted(recorded) == sorted(p.name for p in native.compiled_sources(package))
        assert native.stale_native_modules(package) == []  # the import-time check agrees
    # What is imported is the build: the selected modules, and only those.
    assert mp2amp.transform.events.__file__.endswith(SUFFIX)
    assert mp2amp.identity.graph.__file__.endswith(SUFFIX)
    assert mp2amp.emulators.amplitude.validate.__file__.endswith(SUFFIX)
    assert mp2amp.identity.store.__file__.endswith(".py")  # its ScratchDb is weakly referenced
    assert mp2amp.transform.mapping.__file__.endswith(".py")  # also a script: stays Python


def _package(tmp_path: Path, name: str, files: tuple[str, ...]) -> Path:
    package = tmp_path / name
    package.mkdir()
    for file in ("__init__.py", *files):
        (package / file).write_text(f"# {file}\n")
    return package


def _write_manifest(package: Path) -> None:
    # as the build tool writes it (its own copy of mp2amp.native, loaded by path)
    selection = _compile_native().NATIVE
    (package / selection.MANIFEST).write_text(
        json.dumps({"sources": selection.source_hashes(package)}))


def test_an_edited_added_or_removed_source_is_reported_stale(tmp_path: Path) -> None:
    package = _package(tmp_path, "generate", ("ids.py", "planner.py"))
    assert native.stale_native_modules(package) == []  # no build: nothing to be stale
    _write_manifest(package)  # written by the tool, read by the runtime check
    assert native.stale_native_modules(package) == []
    (package / "ids.py").write_text("# ids.py, edited\n")
    (package / "truth.py").write_text("# new\n")
    (package / "planner.py").unlink()
    assert native.stale_native_modules(package) == ["ids.py", "planner.py", "truth.py"]
    with pytest.warns(RuntimeWarning, match=r"older than ids\.py, planner\.py, truth\.py"):
        native.warn_if_stale(package)


def test_only_the_selected_modules_of_a_package_count(tmp_path: Path) -> None:
    selected = tuple(f"{name}.py" for name in native.PACKAGES["transform"] or ())
    package = _package(tmp_path, "transform", (*selected, "mapping.py"))
    _write_manifest(package)
    recorded = json.loads((package / native.MANIFEST).read_text())["sources"]
    assert sorted(recorded) == sorted(selected)
    (package / "mapping.py").write_text("# edited: it runs from source anyway\n")
    (package / "plan.py").write_text("# new, not selected\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        native.warn_if_stale(package)
    (package / "events.py").write_text("# edited\n")
    assert native.stale_native_modules(package) == ["events.py"]


def test_a_generator_expression_mypyc_would_make_a_list_fails_the_build() -> None:
    # mypyc's build output, as printed: one such warning among others
    report = ("src/mp2amp/identity/original.py:202: warning: Treating generator "
              "comprehension as list\nsrc/mp2amp/x.py:3: note: something else\n")
    assert _compile_native().materialized_streams(report) == [
        "src/mp2amp/identity/original.py:202"]
    assert _compile_native().materialized_streams("") == []
