"""A result whose text the stream cannot encode is printed escaped, never a traceback
(session 26 review): a work folder's undecodable byte (a lone surrogate once Python
decodes it) under a strict UTF-8 stdout, or a window name outside ASCII under
``PYTHONIOENCODING=ascii``, ended ``status`` in a ``UnicodeEncodeError``, exit 1. Such
characters are written as JSON spells them (``\\udcff``, ``\\u00e9``): valid in a
``--json`` document, readable in a table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mp2amp.ledger import Ledger


def _status(workdir: bytes, encoding: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mp2amp", "status", "--workdir",
                           os.fsdecode(workdir), *extra],
                          env={**os.environ, "PYTHONIOENCODING": encoding, "COLUMNS": "200"},
                          capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A work folder named with a byte that is not UTF-8, whose one window is named
    outside ASCII."""
    work = os.path.join(os.fsencode(tmp_path_factory.mktemp("enc")), b"bad\xffdir")
    os.mkdir(work)
    ledger = Ledger(Path(os.fsdecode(work)) / "ledger.sqlite")
    ledger.add_windows([("caf\u00e9-\U0001f600", "day", {})])
    ledger.close()
    return work


def test_an_undecodable_byte_in_a_table_is_escaped_under_strict_utf8(odd_folder: bytes) -> None:
    proc = _status(odd_folder, "utf-8", "--windows")
    assert b"Traceback" not in proc.stderr and proc.stderr == b""
    assert proc.returncode == 0
    text = proc.stdout.decode("utf-8")
    assert "bad\\udcffdir" in text
    assert "caf\u00e9-\U0001f600" in text  # what the stream can take stays as it is


def test_text_outside_ascii_is_escaped_under_an_ascii_stdout(odd_folder: bytes) -> None:
    proc = _status(odd_folder, "ascii", "--windows")
    assert proc.returncode == 0 and proc.stderr == b""
    text = proc.stdout.decode("ascii")  # nothing but ASCII went out
    assert "caf\\u00e9-\\ud83d\\ude00" in text
    doc = json.loads(_status(odd_folder, "ascii", "--json").stdout.decode("ascii"))
    assert [w["window"] for w in doc["windows"]] == ["caf\u00e9-\U0001f600"]
    assert doc["ledger"].endswith("bad\\udcffdir/ledger.sqlite")  # as json_text writes it
