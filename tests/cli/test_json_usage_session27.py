"""Session 27 soak (helper-320): an option missing its value (``--workdir`` last on the
line) or a flag given one (``--windows=3``) printed no JSON with ``--json``: the parser's
own errors carry no command context, so the usage object was skipped."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mp2amp.cli import app


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("status", "--json", "--workdir"), "Option '--workdir' requires an argument."),
    (("migrate", "--json", "--config"), "Option '--config' requires an argument."),
    (("demo", "--json", "--events"), "Option '--events' requires an argument."),
    (("status", "--json", "--windows=3"), "Option '--windows' does not take a value."),
])
def test_a_parser_error_is_one_usage_object(args: tuple[str, ...], message: str) -> None:
    code, stdout = invoke(*args)
    assert code == 2
    assert json.loads(stdout) == {"exit_code": 2, "error": {
        "kind": "usage", "type": "BadOptionUsage", "message": message}}


def test_without_json_nothing_goes_to_stdout() -> None:
    assert invoke("status", "--workdir") == (2, "")


def test_transform_without_out_keeps_its_event_stream_clean() -> None:
    code, stdout = invoke("transform", "events", "--json", "--rejects")
    assert (code, stdout) == (2, "")
