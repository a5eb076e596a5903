"""Run mp2amp from its ``.py`` sources even where compiled modules sit beside them.

``tools/compile_native.py`` puts mypyc extension modules next to the sources of the
generator and the transform (``mp2amp.native``), and Python imports those first. The tests
that compare both builds and the benchmarks that measure the speedup need the pure-Python
modules in the same tree: ``install()`` makes the import system see only ``.py`` files
under ``src/`` (other paths, such as orjson's extension module in site-packages, keep their
normal finders).

    python tools/pure_python.py generate --out DIR ...   # the mp2amp CLI, pure Python
"""

from __future__ import annotations

import sys
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, SourceFileLoader
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def install(src: Path = SRC) -> None:
    """From now on, modules under ``src`` are imported from source (call before importing
    mp2amp; mp2amp modules imported already are dropped)."""
    root = src.resolve()

    def source_only(path: str) -> FileFinder:
        if Path(path).resolve().is_relative_to(root):
            return FileFinder(path, (SourceFileLoader, SOURCE_SUFFIXES))
        raise ImportError  # not ours: the next hook handles it

    sys.path_hooks.insert(0, source_only)
    sys.path_importer_cache.clear()
    for name in [n for n in sys.modules if n == "mp2amp" or n.startswith("mp2amp.")]:
        del sys.modules[name]


if __name__ == "__main__":
    install()
    from mp2amp.cli import main

    sys.argv[0] = "mp2amp"
    main()
