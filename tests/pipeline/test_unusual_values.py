"""Values only the standard library's JSON parser gives (NaN, Infinity, integers past 64
bits, lone surrogates) and records nested hundreds of levels deep, through ``migrate``:
each is rejected or delivered exactly as ``mp2amp transform`` does it, naming the field,
and the rest of the file is delivered. (Staging wrote NaN as null and crashed on the
others; a deep rejected record crashed the transform worker's pickling.)"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from migrate_kit import FAST, amplitude, make_config, mp2amp, stored_counts

from mp2amp.pipeline.migrate import EXIT_OK, migrate

T = 1_700_000_000


def _line(name: str, n: int, value: str, distinct: str | None = "user-unusual-1") -> bytes:
    who = f'"distinct_id":"{distinct}",' if distinct else ""
    return (f'{{"event":"{name}","properties":{{"time":{T + n},{who}'
            f'"$insert_id":"iid-{n}","v":{value}}}}}').encode()


def _file(tmp_path: Path) -> Path:
    deep = "[" * 500 + "1" + "]" * 500              # deeper than orjson writes (255)
    deeper = "[" * 1010 + "1" + "]" * 1010          # deeper than pickle copies (1000)
    lines = [
        _line("Ok", 1, '"fine"'),
        _line("Nan", 2, "NaN"),
        _line("Inf", 3, "-Infinity"),
        # (orjson reads a 30-digit integer as a float; one past a double's range only the
        # standard library reads, as an int)
        _line("Big", 4, "1" + "0" * 400),
        _line("Surrogate", 5, '"\\ud800"'),
        _line("Deep", 6, deep),                       # delivered, flattened to text
        _line("DeepNoId", 7, deeper, distinct=None),  # rejected: missing_id
        _line("Ok", 8, '"fine too"'),
    ]
    path = tmp_path / "events" / "unusual.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_unusual_values_are_rejected_by_field_and_the_rest_delivered(tmp_path: Path) -> None:
    source = _file(tmp_path)
    cfg = tmp_path / "transform.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = ["{source}"]\n')
    mp2amp("transform", "-c", str(cfg), "-o", str(tmp_path / "out.jsonl"), "--json")
    expected_events = sorted(orjson.loads(r)["event_type"]
                             for r in (tmp_path / "out.jsonl").read_bytes().splitlines())
    # (the stdlib reads the rejects file: it keeps the lone surrogate as its escape)
    expected_rejects = sorted(
        (r["line"], r["reason"], r["field"]) for r in map(
            json.loads, (tmp_path / "out.jsonl.rejects.jsonl").read_bytes().splitlines()))
    assert expected_events == ["Deep", "Ok", "Ok"]
    assert [(line, reason) for line, reason, _ in expected_rejects] == [
        (2, "non_json_value"), (3, "non_json_value"), (4, "non_json_value"),
        (5, "non_json_value"), (7, "missing_id")]

    with amplitude(tmp_path / "amp") as url:
        config = make_config(source, tmp_path / "work", url, **{"mixpanel.timezone": "UTC"})
        result = migrate(config, upload_overrides=FAST)
        stored = stored_counts(url)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert result.totals["sent"] == 3 and result.totals["rejected"] == 5
    assert sorted(stored.values()) == [1, 1, 1]
    rows = [orjson.loads(r) for r in (tmp_path / "work" / "dead-letters.jsonl")
            .read_bytes().splitlines()]
    assert sorted((r["line"], r["reason"], r["field"]) for r in rows) == expected_rejects
    by_line = {r["line"]: r for r in rows}
    assert "NaN" in by_line[2]["record"] and "-Infinity" in by_line[3]["record"]
    assert "1" + "0" * 400 in by_line[4]["record"]
    assert "too deeply" in by_line[7]["record"]
