"""The demo finishes at every fault rate it takes (session 24).

Found by a soak: ``--fail-rate`` and ``--drop-rate`` went up to 0.9, but the uploader stops
after 20 failures in a row of one request, so every 200k demo at 0.9 stopped (exit 2),
and at 0.8 about half of them. The demo now takes at most 0.5 of each and gives its own
migration as many tries per request as keep a stop anywhere in the run under one chance
in a million (``demo_retries``); a real migration's retries are the uploader's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.errors import ConfigError
from mp2amp.load.settings import MAX_RETRIES
from mp2amp.pipeline import demo


@pytest.mark.parametrize("seed", [12, 13, 17])
def test_the_demo_finishes_at_the_highest_fault_rates_it_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    real_migrate = demo.migrate
    tries: list[int] = []

    def quick_backoff(*args: Any, **kw: Any) -> Any:  # the same tries, without their waits
        tries.append(kw["upload_overrides"]["max_retries"])
        kw["upload_overrides"] = {**kw["upload_overrides"],
                                  "backoff_base": 0.001, "backoff_cap": 0.001}
        return real_migrate(*args, **kw)

    monkeypatch.setattr(demo, "migrate", quick_backoff)
    result = CliRunner().invoke(app, ["demo", "--events", "3000", "--seed", str(seed),
                                      "--fail-rate", "0.5", "--drop-rate", "0.5",
                                      "--quiet", "--json", "--workdir", str(tmp_path / "d")])
    out = json.loads(result.stdout)
    assert result.exit_code == 0, out
    assert out["ok"] is True
    assert tries == [demo_tries := demo.demo_retries(0.5, 0.5, 3000)] and demo_tries > MAX_RETRIES


def test_the_tries_keep_a_stop_under_one_in_a_million() -> None:
    assert demo.demo_retries(0.05, 0.01, 200_000) == MAX_RETRIES  # the default demo
    assert demo.demo_retries(0, 0, 200_000) == MAX_RETRIES
    for fail, drop, events in [(0.5, 0.5, 200_000), (0.5, 0, 1_000), (0.3, 0.2, 750_000)]:
        n = demo.demo_retries(fail, drop, events)
        failing = fail + (1 - fail) * drop
        requests = max(50, events // 1000)  # ~110 requests at 200k events: an upper bound
        assert requests * failing ** n <= 1e-6 < requests * failing ** (n - 1) \
            or n == MAX_RETRIES


@pytest.mark.parametrize(("option", "value"), [("--fail-rate", "0.51"),
                                               ("--drop-rate", "0.9")])
def test_a_fault_rate_past_the_most_is_refused(option: str, value: str) -> None:
    result = CliRunner().invoke(app, ["demo", option, value])
    assert result.exit_code == 2
    assert option in (result.output + (result.stderr or ""))


def test_run_demo_refuses_it_too() -> None:
    with pytest.raises(ConfigError) as refused:
        demo.run_demo(1_000, fail_rate=0.9)
    assert refused.value.problems == ["--fail-rate must be between 0 and 0.5, got 0.9",
                                      "nothing was generated"]
