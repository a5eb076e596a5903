import subprocess
import sys

from mp2amp import __version__


def test_version_flag_prints_version_and_exits_zero() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mp2amp", "--version"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0
    assert out.stdout == f"mp2amp {__version__}\n"


def test_no_arguments_prints_help() -> None:
    out = subprocess.run([sys.executable, "-m", "mp2amp"], capture_output=True, text=True, check=False)
    assert "Usage" in out.stdout + out.stderr
