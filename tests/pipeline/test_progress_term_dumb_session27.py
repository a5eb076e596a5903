"""Session 27 soak (helper-320): on a terminal with TERM=dumb the rich display drew
nothing until the run ended (15 s of a silent terminal); such a terminal gets the plain
periodic lines, as a pipe does."""

from __future__ import annotations

import io

import pytest

from mp2amp.pipeline.progress import LogReporter, RichReporter, choose_reporter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("term", "kind"), [
    ("dumb", LogReporter), ("DUMB", LogReporter), ("xterm-256color", RichReporter),
    ("", RichReporter)])
def test_a_dumb_terminal_gets_the_plain_lines(monkeypatch: pytest.MonkeyPatch, term: str,
                                              kind: type) -> None:
    monkeypatch.setenv("TERM", term)
    assert type(choose_reporter(False, Terminal())) is kind


def test_a_pipe_still_gets_the_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    assert type(choose_reporter(False, io.StringIO())) is LogReporter
