"""The README as a contract: concrete claims of the ``demo``, ``migrate``, ``status``,
``emulate amplitude`` and ``emulate mixpanel`` sections and of the Configuration table,
checked against the real code (CLI through ``CliRunner``, library calls, the in-process
emulators).

Tests marked ``xfail(strict=True)`` show a claim the code contradicts; the others pin
claims no other test checks."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import sqlite3
import time
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer.main
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.config import load_config
from mp2amp.config.sections import (
    AmplitudeConfig as AmpSection,
)
from mp2amp.config.sections import (
    Config,
    MixpanelConfig,
    PrivacyConfig,
    RunConfig,
    SourceConfig,
    TransformConfig,
)
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.errors import ConfigError
from mp2amp.load import UploadSettings
from mp2amp.transform.settings import RevenueSettings
from shared_kit import amplitude_emulator, cli_workspace

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
KEY = "readme-claims-key"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())


def section(name: str) -> str:
    """The README text of ``<!-- section:NAME -->`` up to the next section marker."""
    start = README.index(f"<!-- section:{name} -->")
    end = README.find("<!-- section:", start + 1)
    return README[start : end if end != -1 else None]


def click_command(*path: str) -> Any:
    cmd: Any = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def options_of(*path: str) -> dict[str, Any]:
    """``--long-option`` -> its click parameter."""
    return {o: p for p in click_command(*path).params for o in p.opts if o.startswith("--")}


def page_view_lines(n: int, day: str = "2024-03-01") -> str:
    from datetime import UTC, datetime

    base = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
    rows = [
        {
            "event": "Page View",
            "properties": {
                "time": base + i * 60,
                "distinct_id": f"user-{i % 7:03d}",
                "$insert_id": f"{day}-{i}",
            },
        }
        for i in range(n)
    ]
    rows.append(
        {
            "event": "Page View",
            "properties": {"time": base, "distinct_id": "undefined", "$insert_id": "junk-1"},
        }
    )
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return cli_workspace(monkeypatch, tmp_path, KEY, page_view_lines(30))


@pytest.fixture
def amp_url(tmp_path: Path) -> Iterator[str]:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the Configuration table against the loader -------------------------------------------

SECTIONS: dict[str, type[Any]] = {
    "mixpanel": MixpanelConfig,
    "source": SourceConfig,
    "amplitude": AmpSection,
    "transform": TransformConfig,
    "privacy": PrivacyConfig,
    "run": RunConfig,
}


def config_table() -> dict[str, str]:
    """``[section]`` -> the text of its row in the README's Configuration table."""
    rows: dict[str, str] = {}
    for line in section("config").splitlines():
        m = re.match(r"^\| `\[(\w+)\]` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def env_only(cls: type[Any]) -> dict[str, str]:
    return {f.name: f.metadata["env"] for f in dataclasses.fields(cls) if "env" in f.metadata}


def test_the_configuration_table_has_a_row_per_section_of_the_loader() -> None:
    loader_sections = {f.name for f in dataclasses.fields(Config) if not f.metadata.get("internal")}
    assert set(config_table()) == loader_sections == set(SECTIONS)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_key_the_loader_accepts_is_in_the_configuration_table(name: str) -> None:
    row = config_table()[name]
    cls = SECTIONS[name]
    secrets = env_only(cls)
    accepted = {f.name for f in dataclasses.fields(cls)} - set(secrets)
    named = set(re.findall(r"`([A-Za-z_]\w*)`", row))
    assert accepted - named == set(), f"[{name}] keys missing from the README table"
    # and nothing in the row's key list is unknown to the loader (values such as `stop`,
    # `keep` and the revenue names are checked on their own)
    values = {"stop", "keep", "truncated_file", "distinct_id", "too_deep", "migrate"}
    revenue = {f.name for f in dataclasses.fields(RevenueSettings)}
    unknown = named - accepted - values - (revenue if name == "transform" else set())
    assert unknown == set(), f"[{name}] names keys the loader refuses: {unknown}"


def test_the_revenue_table_names_every_revenue_key() -> None:
    row = config_table()["transform"]
    after = row.split("`[transform.revenue]` property names:")[1]
    named = re.findall(r"`(\w+)`", after.split("(")[0])
    assert sorted(named) == sorted(f.name for f in dataclasses.fields(RevenueSettings))
    # and the loader takes them under [transform.revenue]
    cfg = load_config(
        None,
        {
            "transform.revenue": {k: "x" for k in named if k != "refund_events"}
            | {"refund_events": ["Refund"]}
        },
        env={},
    )
    assert cfg.transform.revenue.items == "x" and cfg.transform.revenue.refund_events == ("Refund",)


def test_every_secret_the_loader_reads_is_named_in_the_readme_and_refused_in_the_file(
    tmp_path: Path,
) -> None:
    text = flat(section("config"))
    secrets = {
        (name, key, var) for name, cls in SECTIONS.items() for key, var in env_only(cls).items()
    }
    assert {var for *_, var in secrets} == {
        "MIXPANEL_SERVICE_ACCOUNT",
        "MIXPANEL_SECRET",
        "AMPLITUDE_API_KEY",
        "AMPLITUDE_SECRET_KEY",
    }
    for *_, var in secrets:
        assert f"`{var}`" in text
    assert "`MP2AMP_HASH_SALT` (wins over `hash_salt`)" in text
    # "A secret key written in the file is itself an error": each of them, not only api_key
    by_section: dict[str, list[str]] = {}
    for name, key, _ in sorted(secrets):
        by_section.setdefault(name, []).append(f'{key} = "u:s"\n')
    body = "".join(f"[{name}]\n" + "".join(keys) for name, keys in by_section.items())
    path = tmp_path / "mp2amp.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    for name, key, var in secrets:
        assert (
            f"{name}.{key}: secrets are read only from the environment ({var}); "
            "remove it from the file"
        ) in info.value.problems


# (section, key, the README's words for its default, the default the loader gives)
DEFAULTS = [
    ("mixpanel", "export_per_hour", "`export_per_hour` (60)", 60),
    ("mixpanel", "export_per_second", "`export_per_second` (3)", 3),
    ("source", "export_window_days", "`export_window_days` (1..31, default 1", 1),
    ("amplitude", "min_id_length", "`min_id_length` (1)", 1),
    ("transform", "session_gap_minutes", "`session_gap_minutes` (30)", 30),
    ("transform", "retroactive", "`retroactive` (true)", True),
    ("transform", "amplitude_event_names", "`amplitude_event_names` (false)", False),
    ("run", "workdir", "`workdir` (.mp2amp)", Path(".mp2amp")),
    ("run", "concurrency", "`concurrency` (8)", 8),
    ("run", "memory_budget", "`memory_budget` (200000", 200_000),
]


@pytest.mark.parametrize(
    ("name", "key", "words", "value"), DEFAULTS, ids=[f"{s}.{k}" for s, k, *_ in DEFAULTS]
)
def test_configuration_table_defaults_are_the_loaders(
    name: str, key: str, words: str, value: Any
) -> None:
    assert words in config_table()[name]
    assert getattr(getattr(load_config(None, env={}), name), key) == value


def test_enumerated_values_in_the_table_are_the_loaders_choices() -> None:
    rows = config_table()
    literal = {
        ("mixpanel", "region"): "(us, eu, in)",
        ("mixpanel", "id_merge"): "(simplified, original)",
        ("amplitude", "region"): "(us, eu)",
        ("amplitude", "endpoint"): "(batch, httpapi)",
        ("privacy", "ip"): "(keep, drop)",
    }
    for (name, key), words in literal.items():
        assert f"`{key}` {words}" in rows[name]
        hint = typing.get_type_hints(SECTIONS[name])[key]
        # an optional choice (amplitude.region: left out, the api_host decides) lists the
        # choices without None
        choices = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(choices) == 1 and typing.get_origin(choices[0]) is typing.Literal:
            choices = list(typing.get_args(choices[0]))
        assert ", ".join(choices) == words.strip("()")
    assert "`damaged_files` (`stop`:" in rows["source"] and "`keep`:" in rows["source"]
    assert typing.get_args(typing.get_type_hints(SourceConfig)["damaged_files"]) == ("stop", "keep")
    assert load_config(None, env={}).source.damaged_files == "stop"


def test_batch_max_bytes_defaults_and_endpoint_limits_are_the_readmes() -> None:
    row = config_table()["amplitude"]
    assert (
        "`batch_max_bytes` (10 MiB batch, 1,000,000 httpapi; at most the endpoint's "
        "request limit)" in row
    )
    assert UploadSettings(api_key="k").limits.max_bytes == 10 * 1024 * 1024
    assert UploadSettings(api_key="k", endpoint="httpapi").limits.max_bytes == 1_000_000
    # "a cap past the endpoint's request limit, 20,000,000 or 1,000,000 bytes, is refused"
    assert UploadSettings(api_key="k", max_bytes=20_000_000).limits.max_bytes == 20_000_000
    with pytest.raises(ConfigError):
        load_config(None, {"amplitude.batch_max_bytes": 20_000_001}, env={})
    with pytest.raises(ConfigError, match="at most 1,000,000 for the httpapi"):
        UploadSettings(api_key="k", endpoint="httpapi", max_bytes=1_000_001)


@pytest.mark.parametrize(
    ("key", "bad", "good"),
    [
        ("source.export_window_days", [0, 32], [1, 31]),  # "1..31"
        ("transform.session_gap_minutes", [0, 1441], [1, 1440]),  # example file: 1..1440
        ("run.concurrency", [0, 65], [1, 64]),  # example file: 1..64
        ("transform.groups", [["a", "b", "c", "d", "e", "f"]], [["a", "b", "c", "d", "e"]]),
    ],
)
def test_documented_ranges_are_the_loaders(key: str, bad: list[Any], good: list[Any]) -> None:
    for value in good:
        load_config(None, {key: value}, env={})
    for value in bad:
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_config(None, {key: value}, env={})


def test_memory_budget_is_split_half_identity_quarter_sessions_quarter_dedup() -> None:
    from mp2amp.pipeline.budgets import stage_budgets

    assert (
        "half for identity, a quarter each for open sessions and dedup digests"
        in config_table()["run"]
    )
    b = stage_budgets(load_config(None, env={}).run.memory_budget)
    assert (b.identity_ids, b.session_devices, b.dedup_digests) == (100_000, 50_000, 50_000)


def test_the_keys_migrate_says_it_uses_exist() -> None:
    text = flat(section("migrate"))
    para = text.split("**Config keys it uses**:")[1].split("`storage_options` go to fsspec")[0]
    for name, body in re.findall(r"`\[(\w+)\] ([^`]*)`", para):
        for key in re.findall(r"\w+", re.sub(r"\(.*?\)", "", body)):
            assert key in {f.name for f in dataclasses.fields(SECTIONS[name])}, (name, key)
    for key in (
        "files",
        "from_date",
        "to_date",
        "export_window_days",
        "storage_options",
        "identity_table",
        "damaged_files",
    ):
        assert f"{key}" in para.split("[mixpanel]")[0]


def test_the_readme_config_error_example_is_what_migrate_prints(env: Path) -> None:
    block = section("config").split("```\n")[1]
    expected = block.strip("\n").splitlines()
    (env / "mp2amp.toml").write_text(
        '[amplitude]\napi_key = "in-the-file"\n'
        '[transform]\nsession_gap_minutes = "soon"\n'
        '[privacy]\nip = "maybe"\n'
    )
    result = invoke("migrate", "-c", "mp2amp.toml", "--json")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == expected
    # --json: the same error as one JSON object on stdout ("## Commands")
    doc = orjson.loads(result.stdout)
    assert doc["exit_code"] == 2
    assert (doc["error"]["kind"], doc["error"]["type"]) == ("terminal", "ConfigError")
    assert f"error: {doc['error']['message']}".splitlines() == expected
    assert [f"  - {p}" for p in doc["error"]["problems"]] == expected[1:]
    assert not (env / ".mp2amp").exists()  # "before reading any input"


def test_the_readme_json_error_example_is_what_migrate_prints(env: Path) -> None:
    """"## Commands": the JSON object of a stopped ``--json`` run, its message cut at ...."""
    example = orjson.loads(section("commands").split("```json\n")[1].split("```")[0])
    (env / "mp2amp.toml").write_text('[source]\nfiles = ["events"]\n[run]\nconcurrency = "8"\n')
    result = invoke("migrate", "-c", "mp2amp.toml", "--json")
    assert result.exit_code == 2
    doc = orjson.loads(result.stdout)
    shown, _, _ = example["error"].pop("message").partition("...")
    assert doc["error"].pop("message").startswith(shown)
    assert doc == example


def test_mp2amp_toml_in_the_current_folder_is_used_without_config(env: Path, amp_url: str) -> None:
    (env / "mp2amp.toml").write_text(
        f'[source]\nfiles = ["events"]\n[amplitude]\n'
        f'api_host = "{amp_url}"\n[run]\nworkdir = "from-file"\n'
    )
    run = invoke("migrate", "--json")
    assert run.exit_code == 0, run.stderr
    assert orjson.loads(run.stdout)["workdir"] == str(env / "from-file")
    status = invoke("status", "--json")
    assert status.exit_code == 0
    assert orjson.loads(status.stdout)["ledger"] == str(env / "from-file" / "ledger.sqlite")


# --- migrate ------------------------------------------------------------------------------


def test_unreachable_amplitude_stops_at_once_with_exit_2_and_a_json_error(env: Path) -> None:
    """README exit codes: "Amplitude ... not reachable at all since the run started (5
    connection attempts, ~5 s: a wrong api_host or port says so at once ...)"."""
    port = free_port()
    (env / "mp2amp.toml").write_text(
        f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "http://127.0.0.1:{port}"\n'
    )
    started = time.monotonic()
    result = invoke("migrate", "--json")
    took = time.monotonic() - started
    assert result.exit_code == 2
    # "a command that stops on an error prints one JSON object on stdout in place of its
    # result, with the same exit code"
    doc = orjson.loads(result.stdout)
    assert doc["exit_code"] == 2
    assert (doc["error"]["kind"], doc["error"]["type"]) == ("terminal", "RetriesExhausted")
    message = flat(result.stderr)
    assert message.startswith(
        f"error: cannot connect to Amplitude at http://127.0.0.1:{port}/batch"
    )
    assert "api_host" in message and "--resume" in message and "Traceback" not in message
    assert took < 30, f"took {took:.1f} s instead of ~5 s"
    last = orjson.loads(invoke("status", "--json").stdout)["last_attempt"]
    assert (last["outcome"], last["exit_code"]) == ("stopped", 2)


def test_migrate_json_result_holds_the_documented_fields(env: Path, amp_url: str) -> None:
    (env / "mp2amp.toml").write_text(
        f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{amp_url}"\n'
    )
    run = invoke("migrate", "--json")
    assert run.exit_code == 0, run.stderr
    doc = orjson.loads(run.stdout)
    assert {
        "totals",
        "windows",
        "problems",
        "identity",
        "load",
        "inputs_not_in_run",
        "resumed",
        "workdir",
        "dead_letter_file",
    } <= doc.keys()
    assert {"long_waits", "longest_wait", "retry_after_capped"} <= doc["load"].keys()
    t = doc["totals"]
    assert t["read"] == sum(
        t[k]
        for k in ("sent", "identity", "duplicate", "skipped", "rejected", "dead_lettered", "parked")
    )
    # default work folder `.mp2amp/`, file `ledger.sqlite`, dead letters beside it
    assert (env / doc["workdir"]).resolve() == (env / ".mp2amp").resolve()
    assert (env / ".mp2amp" / "ledger.sqlite").is_file()
    rows = [
        orjson.loads(x) for x in (env / ".mp2amp" / "dead-letters.jsonl").read_bytes().splitlines()
    ]
    assert [list(r) for r in rows] == [
        ["source", "line", "window", "stage", "reason", "message", "field", "record"]
    ]
    assert rows[0]["stage"] == "transform" and rows[0]["reason"] == "missing_id"
    assert rows[0]["line"] == 31 and rows[0]["source"].endswith("2024-03-01.jsonl")


# --- status -------------------------------------------------------------------------------


def test_status_exits_0_and_names_a_window_that_does_not_add_up(env: Path, amp_url: str) -> None:
    (env / "mp2amp.toml").write_text(
        f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{amp_url}"\n'
    )
    assert invoke("migrate", "--quiet").exit_code == 0
    db = sqlite3.connect(env / ".mp2amp" / "ledger.sqlite")
    with db:
        batch, accepted = db.execute(
            "SELECT batch_id, accepted FROM batches WHERE state = 'done' LIMIT 1"
        ).fetchone()
        db.execute("UPDATE batches SET accepted = ? WHERE batch_id = ?", (accepted - 2, batch))
    db.close()
    # status reads the ledger's counts as they are: "Exit 0" with the window in `problems`
    doc = invoke("status", "--json")
    assert doc.exit_code == 0, doc.stderr
    got = orjson.loads(doc.stdout)
    assert got["totals"]["balanced"] is False, got
    assert len(got["problems"]) == 1 and ": read 31 " in got["problems"][0]
    text = invoke("status")
    assert text.exit_code == 0
    assert "does not add up:" in flat(text.stderr)


def test_status_json_last_attempt_has_every_documented_key(env: Path, amp_url: str) -> None:
    (env / "mp2amp.toml").write_text(
        f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{amp_url}"\n'
    )
    assert invoke("migrate", "--quiet").exit_code == 0
    last = orjson.loads(invoke("status", "--json").stdout)["last_attempt"]
    assert (last["outcome"], last["exit_code"]) == ("finished", 0)
    assert set(last) == {"started", "ended", "outcome", "exit_code", "message"}


def test_status_of_a_bom_config_with_other_problems_reads_its_workdir(env: Path) -> None:
    from mp2amp.ledger import Ledger

    ledger = Ledger(env / "work" / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    ledger.close()
    body = '[privacy]\nhash_properties = ["$email"]\n[run]\nworkdir = "work"\n'
    (env / "mp2amp.toml").write_bytes(b"\xef\xbb\xbf" + body.encode())
    result = invoke("status", "--json")
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["ledger"] == str(env / "work" / "ledger.sqlite")


def test_status_of_a_plain_config_with_other_problems_reads_its_workdir(env: Path) -> None:
    """The same as above without the BOM: what the README promises works."""
    from mp2amp.ledger import Ledger

    ledger = Ledger(env / "work" / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    ledger.close()
    (env / "mp2amp.toml").write_text(
        '[privacy]\nhash_properties = ["$email"]\n[run]\nworkdir = "work"\n'
    )
    result = invoke("status", "--json")
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["ledger"] == str(env / "work" / "ledger.sqlite")


# --- demo ---------------------------------------------------------------------------------


def test_demo_synopsis_shows_the_defaults_of_help() -> None:
    usage = re.search(r"^mp2amp demo (.*)$", README, re.M)
    assert usage is not None
    shown = dict(re.findall(r"\[(--[a-z-]+) ([0-9.]+)\]", usage.group(1)))
    opts = options_of("demo")
    assert shown == {
        "--events": "200000",
        "--fail-rate": "0.05",
        "--drop-rate": "0.01",
        "--seed": "7",
    }
    for name, value in shown.items():
        assert str(opts[name].default) == value, name


def test_demo_refusal_for_other_events_names_the_events_option(tmp_path: Path) -> None:
    import mp2amp.pipeline.demo as demo
    from mp2amp.errors import InputError

    kept = tmp_path / "kept"
    first = demo.run_demo(1_000, kept, fail_rate=0.0, drop_rate=0.0)
    assert first.ok
    with pytest.raises(InputError) as info:
        demo.run_demo(3_500, kept, fail_rate=0.0, drop_rate=0.0)
    named = str(info.value).split("other options", 1)[-1]  # not the folder's name
    assert re.search(r"\bevents\b", named), named


# --- emulate amplitude --------------------------------------------------------------------


def amplitude_option_table() -> dict[str, str]:
    """``--option`` -> the README's default column for it."""
    rows: dict[str, str] = {}
    for line in section("emulate-amplitude").splitlines():
        m = re.match(r"^\| (`--[^|]+) \| ([^|]+) \| [^|]+ \|$", line)
        if not m:
            continue
        names = re.findall(r"`(--[a-z0-9-]+)", m.group(1))
        defaults = [d.strip().strip("`") for d in m.group(2).split(",")]
        for i, name in enumerate(names):
            rows[name] = defaults[i] if len(defaults) == len(names) else m.group(2).strip()
    return rows


def test_emulate_amplitude_help_and_readme_table_name_the_same_options() -> None:
    assert set(amplitude_option_table()) == set(options_of("emulate", "amplitude")) - {"--help"}


@pytest.mark.parametrize(
    "option",
    [
        "--host",
        "--port",
        "--data",
        "--api-key",
        "--secret-key",
        "--daily-quota",
        "--timezone",
        "--project-id",
        "--fail-rate",
        "--drop-after-ingest-rate",
        "--latency-ms",
        "--seed",
    ],
)
def test_emulate_amplitude_defaults_are_the_readmes(option: str) -> None:
    readme = amplitude_option_table()[option]
    default = options_of("emulate", "amplitude")[option].default
    if isinstance(default, float | int) and not isinstance(default, bool):
        assert float(default) == float(readme), option
    else:
        assert str(default) == readme, option


def test_emulate_amplitude_eps_limit_default_is_per_endpoint(tmp_path: Path) -> None:
    assert amplitude_option_table()["--eps-limit"] == "30 on `/2/httpapi`, 1000 on `/batch`"
    assert options_of("emulate", "amplitude")["--eps-limit"].default is None
    cfg = AmplitudeConfig(data_dir=tmp_path)
    assert (cfg.eps_for("httpapi"), cfg.eps_for("batch")) == (30, 1000)
    # and the in-process config's defaults are the command's
    assert (cfg.api_key, cfg.secret_key, cfg.project_id, cfg.daily_quota, cfg.timezone) == (
        "emulator-api-key",
        "emulator-secret-key",
        187520,
        500_000,
        "UTC",
    )


# --- emulate mixpanel ---------------------------------------------------------------------


def test_emulate_mixpanel_synopsis_names_every_option_with_its_default() -> None:
    text = section("emulate-mixpanel")
    usage = text.split("```sh\n")[1].split("```")[0]
    named = set(re.findall(r"--[a-z-]+", usage))
    assert named == set(options_of("emulate", "mixpanel")) - {"--help"}
    opts = options_of("emulate", "mixpanel")
    shown = dict(re.findall(r"\[(--[a-z-]+) ([0-9.]+)\]", usage))
    assert shown == {"--host": "127.0.0.1", "--port": "8041", "--export-rate-limit": "60"}
    for name, value in shown.items():
        assert str(opts[name].default) == value
    assert opts["--data"].required


# --- progress -----------------------------------------------------------------------------

PROGRESS = re.compile(
    r"mp2amp: t=\d+\.\ds phase=\w+ done=\d+/\d+ sent=\d+ rate=\d+/s "
    r"retries=\d+ throttles=\d+ dead_letters=\d+ eta=(?:\?|\d+s)"
)


def test_progress_off_a_terminal_is_plain_lines_and_nothing_when_quiet(
    env: Path, amp_url: str
) -> None:
    """README (migrate, Progress): off a terminal "one plain line every 10 s and a last one
    at the end ...; nothing with `--quiet` or `--json`"."""
    (env / "mp2amp.toml").write_text(
        f'[source]\nfiles = ["events"]\n[amplitude]\n'
        f'api_host = "{amp_url}"\n[run]\nworkdir = "w1"\n'
    )
    plain = invoke("migrate")
    assert plain.exit_code == 0, plain.stderr
    lines = [x for x in plain.stderr.splitlines() if x.startswith("mp2amp: ")]
    assert lines and all(PROGRESS.fullmatch(x) for x in lines), plain.stderr
    assert " done=31/31 sent=30 " in lines[-1] and lines[-1].endswith(" eta=0s")
    (env / "mp2amp.toml").write_text(
        f'[source]\nfiles = ["events"]\n[amplitude]\n'
        f'api_host = "{amp_url}"\n[run]\nworkdir = "w2"\n'
    )
    quiet = invoke("migrate", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""


# --- docs/contracts.md §7: Data Pipelines files are UTC -------------------------------------


def test_data_pipelines_rows_are_not_shifted_by_legacy_time(env: Path, tmp_path: Path) -> None:
    from mp2amp.emulators.amplitude.store import EventStore

    day = env / "pipelines" / "123" / "mp_master_event" / "2024" / "03" / "01"
    day.mkdir(parents=True)
    utc_8am = 1709280000  # 2024-03-01T08:00:00Z, as the pipeline wrote it
    (day / "part-0001.json").write_text(
        json.dumps(
            {
                "event_name": "Purchase",
                "time": utc_8am,
                "distinct_id": "user-1",
                "device_id": "dev-aaaaa",
                "user_id": "user-1",
                "insert_id": "abc123",
                "properties": {"price": 3},
            }
        )
        + "\n"
    )
    data = tmp_path / "amp-data"
    with AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=KEY)).running() as url:
        (env / "mp2amp.toml").write_text(
            '[mixpanel]\ntimezone = "America/Los_Angeles"\nlegacy_time = true\n'
            f'[source]\nfiles = ["pipelines"]\n[amplitude]\napi_host = "{url}"\n'
        )
        run = invoke("migrate", "--json")
        assert run.exit_code == 0, run.stderr
        assert orjson.loads(run.stdout)["totals"]["sent"] == 1
    stored = list(EventStore(data).iter_events())
    assert [e["time"] for e in stored] == [utc_8am * 1000]
