"""A blank input path (``mp2amp transform ""``, an unset variable) is named as blank,
not as a file called "" that does not exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mp2amp.errors import InputError
from mp2amp.extract.files import expand_paths


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_input_path_is_named_blank(blank: str) -> None:
    with pytest.raises(InputError) as caught:
        expand_paths([blank])
    assert str(caught.value) == (f"an input path is blank ({blank!r}); give the file or "
                                 "folder (\".\" for the current folder) and run again")


def test_transform_of_a_blank_path_exits_2_with_that_message(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "transform", "", "-o",
                           str(tmp_path / "out.jsonl")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ("error: an input path is blank (''); give the file or folder "
                           "(\".\" for the current folder) and run again\n")
    assert not (tmp_path / "out.jsonl").exists()
