"""The mypyc-compiled transform and identity (``mp2amp.native``) are the pure-Python ones.

``mp2amp transform`` runs twice on the same inputs: here, with the compiled modules every
other test uses, and in a subprocess whose import system sees only the ``.py`` files
(``tools/pure_python.py``). The events, the rejects and the summary must be the same
bytes. The inputs are a dirty generated project (every kind of dirt the generator makes)
and every real record of the wild fixtures, under three configurations (both ID merge
modes, in memory and spilled to SQLite).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mp2amp.identity.graph
import mp2amp.transform.events
from mp2amp.cli import app
from mp2amp.generate import GenerateConfig, generate_project

ROOT = Path(__file__).resolve().parents[2]
WILD = Path("/work/shared/fixtures/wild")
if not WILD.exists():  # a checkout outside the team machine
    WILD = ROOT.parent / "shared" / "fixtures" / "wild"
COMPILED = all(str(module.__file__).endswith(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
               for module in (mp2amp.transform.events, mp2amp.identity.graph))
pytestmark = pytest.mark.skipif(not COMPILED, reason="no compiled build: the transform runs "
                                "as pure Python (tools/compile_native.py found no C compiler)")

# the CLI in a subprocess that imports only the .py sources (tools/pure_python.py)
_PURE = """
import sys
sys.path.insert(0, sys.argv.pop(1))
import pure_python
pure_python.install()
import mp2amp.identity.graph
import mp2amp.transform.events
from mp2amp.cli import main
import mp2amp.identity.graph
assert mp2amp.transform.events.__file__.endswith(".py"), mp2amp.transform.events.__file__
assert mp2amp.identity.graph.__file__.endswith(".py"), mp2amp.identity.graph.__file__
sys.argv[0] = "mp2amp"
main()
"""

CONFIGS = {
    "defaults": "",
    "legacy-revenue-groups": """\
[mixpanel]
timezone = "America/Los_Angeles"
legacy_time = true
[transform]
groups = ["company_id"]
amplitude_event_names = true
[transform.revenue]
price = "price"
quantity = "quantity"
product_id = "product_id"
items = "items"
refund_events = ["Refund"]
[privacy]
ip = "drop"
""",
    # original ID merge, spilled to SQLite (the identity budget is half of 1000 IDs)
    "original-spilled": """\
[mixpanel]
id_merge = "original"
[run]
memory_budget = 1000
""",
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_compiled_and_pure_python_transform_write_the_same_bytes(
        tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = "legacy_time = true" in CONFIGS[name]
    merge = "original" if "original" in CONFIGS[name] else "simplified"
    generate_project(GenerateConfig(out=tmp_path / "project", users=300, days=4, seed=9,
                                    dirty=0.05, legacy_time=legacy, id_merge=merge))
    inputs = tmp_path / "in"
    shutil.copytree(tmp_path / "project" / "events", inputs)
    for wild in ("mixpanel-export-events.jsonl", "mixpanel-ingestion-payloads.jsonl"):
        shutil.copy(WILD / wild, inputs / wild)
    runs = {}
    for build in ("pure", "compiled"):
        folder = tmp_path / build
        folder.mkdir()
        (folder / "mp2amp.toml").write_text(CONFIGS[name], encoding="utf-8")
        args = ["transform", str(inputs), "--out", "out.jsonl", "--json"]
        if build == "pure":
            done = subprocess.run([sys.executable, "-c", _PURE, str(ROOT / "tools"), *args],
                                  cwd=folder, capture_output=True, timeout=300)
            code, summary = done.returncode, done.stdout
        else:
            monkeypatch.chdir(folder)
            result = CliRunner().invoke(app, args, catch_exceptions=False)
            code, summary = result.exit_code, result.stdout_bytes
        runs[build] = (code, summary, (folder / "out.jsonl").read_bytes(),
                       (folder / "out.jsonl.rejects.jsonl").read_bytes())
    pure, compiled = runs["pure"], runs["compiled"]
    assert pure[0] == compiled[0] == 0, (pure[1], compiled[1])
    assert pure[1] == compiled[1]
    if "memory_budget" in CONFIGS[name]:
        assert json.loads(pure[1])["identity"]["ids_spilled"] > 500
    assert pure[2].count(b"\n") > 4000 and pure[3].count(b"\n") > 100  # not vacuous
    assert pure[2] == compiled[2], "the events differ between pure Python and compiled"
    assert pure[3] == compiled[3], "the rejects differ between pure Python and compiled"
