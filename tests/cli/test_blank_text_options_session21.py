"""Blank text options and config keys (session 21): `--host ""`, `--timezone "$TZ"` with the
variable unset, `[transform.revenue] price = ""` are refused naming the option or key, exit 2,
before anything is read, written or sent, as blank paths are (test_blank_paths_session20_review).
Before, `emulate amplitude --host ""` listened on every interface, `emulate mixpanel
--service-account ""` fell back to $MIXPANEL_SERVICE_ACCOUNT (or any credentials), and
`price = ""` read no revenue, all without a word."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import typer

from config_kit import EVENT, problems, run
from mp2amp import cli
from mp2amp.config import Config, load_config
from mp2amp.config.sections import BLANK_HINTS

HEADER = "invalid configuration ({} problem(s)); fix them and run again:"
# generate lists its blank options with its other problems, in its own report
GENERATE_HEADER = "invalid configuration in mp2amp generate ({} problem(s)); fix them and run again:"


def text(option: str, what: str, value: str, default: str | None = None) -> str:
    end = f" for the default, {default}" if default is not None else ""
    return (f"{option}: must be {what}, got a blank value {value!r} (an unset variable?); "
            f"give one, or leave the option out{end}")


TZ = "an IANA timezone such as UTC or America/Los_Angeles"
HOST = "an address to listen on, such as 127.0.0.1 (0.0.0.0 for every interface)"


def refused(res: Any, expected: list[str], header: str = HEADER) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [header.format(len(expected)), *(f"  - {p}" for p in expected)]
    assert res.stderr == "error: " + "\n".join(lines) + "\n"
    assert res.stdout == ""


# --- every text option of every command ------------------------------------------------


def test_generate_refuses_each_blank_text_option_before_writing(tmp_path: Path) -> None:
    res = run(["generate", "--out", "p", "--start", "", "--id-merge", " ", "--timezone", "",
               "--industry", "\t"], tmp_path)
    refused(res, [text("--start", "a date as YYYY-MM-DD", "", "2024-01-01"),
                  text("--id-merge", "simplified or original", " ", "simplified"),
                  text("--timezone", TZ, "", "America/Los_Angeles"),
                  text("--industry", "ecommerce, b2b, fintech, streaming, all, or a comma "
                       "list of them", "\t", "all")], GENERATE_HEADER)
    assert list(tmp_path.iterdir()) == []


def test_generate_json_gives_the_error_object_of_a_blank_path(tmp_path: Path) -> None:
    res = run(["generate", "--out", "p", "--timezone", " ", "--json"], tmp_path)
    problem = text("--timezone", TZ, " ", "America/Los_Angeles")
    assert res.returncode == 2
    assert json.loads(res.stdout) == {"exit_code": 2, "error": {
        "kind": "terminal", "type": "ConfigError", "source": "mp2amp generate",
        "message": f"{GENERATE_HEADER.format(1)}\n  - {problem}", "problems": [problem]}}
    assert list(tmp_path.iterdir()) == []


def test_amplitude_emulator_does_not_listen_on_every_interface(tmp_path: Path) -> None:
    # "" was taken as the wildcard address: the emulator served on all interfaces
    res = run(["emulate", "amplitude", "--port", "0", "--data", "d", "--host", ""], tmp_path)
    refused(res, [text("--host", HOST, "", "127.0.0.1")])
    assert list(tmp_path.iterdir()) == []


def test_amplitude_emulator_refuses_blank_keys_and_timezone(tmp_path: Path) -> None:
    # a key of blanks was accepted as the key; "" failed a check naming no option
    res = run(["emulate", "amplitude", "--port", "0", "--data", "d", "--api-key", " ",
               "--secret-key=", "--timezone", ""], tmp_path)
    refused(res, [text("--api-key", "the API key to accept", " ", "emulator-api-key"),
                  text("--secret-key", "the secret key to accept", "", "emulator-secret-key"),
                  text("--timezone", TZ, "", "UTC")])
    assert list(tmp_path.iterdir()) == []


def test_mixpanel_emulator_refuses_each_blank_text_option(tmp_path: Path) -> None:
    # --service-account "" and --api-secret "" fell back to the environment's (or to any
    # credentials); --token "" was announced as a token accepted on /import
    (tmp_path / "p").mkdir()
    res = run(["emulate", "mixpanel", "--port", "0", "--data", "p", "--host", " ",
               "--service-account", "", "--api-secret", " ", "--token", "", "--timezone", ""],
              tmp_path, MIXPANEL_SERVICE_ACCOUNT="u:s")
    refused(res, [text("--host", HOST, " ", "127.0.0.1"),
                  text("--service-account", "USER:SECRET", ""),
                  text("--api-secret", "the API secret to accept", " "),
                  text("--token", "the project token", ""),
                  text("--timezone", TZ, "")])
    assert [p.name for p in tmp_path.iterdir()] == ["p"] and not any((tmp_path / "p").iterdir())


@pytest.mark.parametrize("args", [["generate", "--out", "p", "--timezone", "", "--help"],
                                  ["emulate", "mixpanel", "--data", "p", "--token", "", "--help"]],
                         ids=" ".join)
def test_help_wins_over_a_blank_text_option(tmp_path: Path, args: list[str]) -> None:
    res = run(args, tmp_path)
    assert res.returncode == 0 and "Usage:" in res.stdout, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_text_option_of_every_command_says_what_to_give() -> None:
    # a new text option needs its line in cli._TEXT_HINTS, or its refusal says "a value"
    root = typer.main.get_command(cli.app)
    ctx = root.make_context("mp2amp", ["status"], resilient_parsing=True)

    def options(command: Any) -> list[str]:
        if hasattr(command, "get_command"):
            return [o for name in command.list_commands(ctx)
                    for o in options(command.get_command(ctx, name))]
        return [cli._option_name(p.opts) for p in command.params if cli._is_text_option(p)]

    found = options(root)
    assert sorted(set(found)) == sorted(cli._TEXT_HINTS)
    assert "--timezone" in found and "--host" in found


# --- the config file's text keys -------------------------------------------------------

CONFIG_TZ = "an IANA timezone such as 'UTC' or 'America/Los_Angeles'"


@pytest.mark.parametrize("toml,expected", [
    ('[mixpanel]\ntimezone = ""\n',
     f"mixpanel.timezone: must be {CONFIG_TZ}, got a blank value ''; give one, or remove the "
     "key for the default, UTC"),
    ('[mixpanel]\nlegacy_time = true\ntimezone_changes = [{since = 2024-01-01, timezone = " "}]\n',
     f"mixpanel.timezone_changes[0].timezone: must be {CONFIG_TZ}, got a blank value ' '; "
     "give one"),
    ('[mixpanel]\napi_host = " "\n',
     "mixpanel.api_host: must be an http(s) URL such as 'https://eu.mixpanel.com', got a "
     "blank value ' '; give one, or remove the key to use the region's own host"),
    ('[mixpanel]\nregion = ""\n', "mixpanel.region: must be one of us, eu, in, got a blank "
     "value ''; give one, or remove the key for the default, us"),
    ('[amplitude]\napi_host = ""\n',
     "amplitude.api_host: must be an http(s) URL such as 'https://api.eu.amplitude.com', got "
     "a blank value ''; give one, or remove the key to use the region's own host"),
    ('[amplitude]\nregion = " "\n', "amplitude.region: must be one of us, eu, got a blank "
     "value ' '; give one, or remove the key for api_host's data center, else us"),
    ('[source]\nfrom_date = ""\nto_date = 2024-01-02\n', "source.from_date: must be a date "
     "like 2024-01-31, got a blank value ''; give one, or remove the key"),
    # silently no revenue: the blank name matched no property
    ('[transform.revenue]\nprice = ""\n', "transform.revenue.price: must be a property name, "
     "got a blank value ''; give one, or remove the key"),
    ('[transform.revenue]\nrefund_events = ["Refund", " "]\n',
     "transform.revenue.refund_events[1]: must be an event name, got a blank value ' '; give "
     "one, or remove it from the list"),
    # silently no user ID: "" fully matches no ID
    ('[transform]\nuser_id_pattern = ""\n', "transform.user_id_pattern: must be a regular "
     "expression such as '^[0-9a-f]{24}$', got a blank value ''; give one, or remove the key"),
    ('[transform]\ngroups = ["company", "  "]\n', "transform.groups[1]: must be a property "
     "name, got a blank value '  '; give one, or remove it from the list"),
    ('[privacy]\ndrop_properties = [" "]\n', "privacy.drop_properties[0]: must be a property "
     "name, got a blank value ' '; give one, or remove it from the list"),
    ('[privacy]\nhash_salt = "s"\nhash_properties = ["$email", ""]\n',
     "privacy.hash_properties[1]: must be a property name, got a blank value ''; give one, "
     "or remove it from the list"),
])
def test_a_blank_config_text_key_is_refused_naming_it(tmp_path: Path, toml: str,
                                                      expected: str) -> None:
    assert problems(tmp_path, toml) == [expected]


def test_a_blank_item_leaves_the_lists_other_problems_reported(tmp_path: Path) -> None:
    # the blank is left out of the list as a bad item is: not counted as a group key
    assert problems(tmp_path, '[transform]\ngroups = ["a", "a", "", "b", "c", "d", 1]\n') == [
        "transform.groups[2]: must be a property name, got a blank value ''; give one, or "
        "remove it from the list",
        "transform.groups[6]: must be a string, got an integer 1",
        "transform.groups: a group key is listed twice",
    ]


def test_a_blank_key_is_refused_by_the_cli_before_anything_is_read(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text(EVENT)
    (tmp_path / "mp2amp.toml").write_text('[transform.revenue]\nprice = " "\n')
    res = run(["transform", "e.jsonl", "-o", "out.jsonl", "--json"], tmp_path)
    problem = ("transform.revenue.price: must be a property name, got a blank value ' '; "
               "give one, or remove the key")
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert (error["type"], error["problems"]) == ("ConfigError", [problem])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.jsonl", "mp2amp.toml"]


def test_text_keys_with_values_still_load(tmp_path: Path) -> None:
    path = tmp_path / "mp2amp.toml"
    path.write_text('[mixpanel]\ntimezone = "Europe/Berlin"\n[transform]\ngroups = ["co"]\n'
                    '[transform.revenue]\nprice = " amount "\n')
    config = load_config(path, env={})
    assert config.mixpanel.timezone == "Europe/Berlin" and config.transform.groups == ("co",)
    assert config.transform.revenue.price == " amount "  # a real name, blanks and all


def test_every_text_key_of_the_config_says_what_to_give() -> None:
    # a new text key needs its BLANK_HINTS line (locations are refused as blank paths)
    def keys(cls: Any, prefix: str) -> list[str]:
        found = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if typing.get_origin(tp) in (typing.Union, types.UnionType):
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
            if typing.get_origin(tp) is tuple:
                tp = typing.get_args(tp)[0]
            if dataclasses.is_dataclass(tp) and isinstance(tp, type):
                found += keys(tp, f"{prefix}{f.name}.")
            elif tp is str and not f.metadata.get("location"):
                found.append(f"{prefix}{f.name}")
        return found

    text_keys = keys(Config, "")
    assert "transform.revenue.price" in text_keys and "mixpanel.timezone" in text_keys
    assert sorted(text_keys) == sorted(k for k in BLANK_HINTS if k != "amplitude.region")
