"""The TOML config: defaults, every problem at once, secrets from the environment only."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from mp2amp.config import Config, Secret, load_config
from mp2amp.errors import ConfigError

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mp2amp.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path | None, overrides: dict[str, object] | None = None,
             env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides, env=env or {})
    assert info.value.source == (str(path) if path else None)
    return info.value.problems


def test_no_file_gives_defaults() -> None:
    config = load_config(None, env={})
    assert config == Config()
    assert config.transform.session_gap_minutes == 30
    assert config.privacy.ip == "keep" and config.keep_ip
    assert config.mixpanel.id_merge == "simplified"


def test_example_file_loads_completely() -> None:
    config = load_config(EXAMPLES / "mp2amp.toml", env={"MP2AMP_HASH_SALT": "pepper"})
    assert config.mixpanel.timezone == "America/Los_Angeles"
    assert config.mixpanel.timezone_changes[0].since == date(2021, 6, 1)
    assert config.source.from_date == date(2024, 1, 1)
    assert config.transform.plan == EXAMPLES / "tracking-plan.yaml"
    assert config.privacy.drop_before == date(2022, 1, 1)
    assert config.run.workdir == EXAMPLES / ".mp2amp"
    settings = config.transform_settings()
    assert settings.keep_ip is False and settings.group_keys == ("company_id",)
    assert settings.timezone_changes == (("2021-06-01", "America/New_York"),)
    assert settings.revenue.price == "price" and settings.revenue.refund_events == ("Refund",)
    assert settings.plan is not None and "Sign Up" in settings.plan.events
    assert settings.privacy is not None
    assert settings.privacy.excluded_users == {"user-deleted-2023-11-02",
                                               "$device:18c4f2a3b5e-0a1b2c3d4e5f"}


def test_every_problem_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """
[mixpanel]
project_id = "abc"
region = "mars"
timezone = "Mars/Olympus"
api_host = "localhost:8041"
id_merge = "simplified"
legacy_time = "yes"

[source]
from_date = 2024-03-01
to_date = "2024-02-30"

[amplitude]
api_key = "in-the-file"
endpont = "batch"

[transform]
session_gap_minutes = 0
groups = ["a", "b", "c", "d", "e", "f"]
plan = "missing.yaml"

[transform.revenue]
price = 5

[privacy]
ip = "hide"
hash_properties = ["email"]

[run]
concurrency = 1000

[extra]
x = 1
""")
    assert problems(path) == [
        "extra: unknown key (known: amplitude, mixpanel, privacy, run, source, transform)",
        "mixpanel.project_id: must be an integer, got a string 'abc'",
        "mixpanel.region: 'mars' is not one of us, eu, in",
        "mixpanel.api_host: 'localhost:8041' is not an http(s) URL like 'http://127.0.0.1:8040'",
        "mixpanel.timezone: 'Mars/Olympus' is not an IANA timezone (like 'America/Los_Angeles' "
        "or 'UTC')",
        "mixpanel.legacy_time: must be true or false, got a string 'yes'",
        "source.to_date: must be a date like 2024-01-31, got '2024-02-30'",
        "amplitude.endpont: unknown key; did you mean 'endpoint'?",
        "amplitude.api_key: secrets are read only from the environment (AMPLITUDE_API_KEY); "
        "remove it from the file",
        "transform.session_gap_minutes: must be 1..1440, got 0",
        "transform.revenue.price: must be a string, got an integer 5",
        "transform.groups: Amplitude allows 5 group types, got 6",
        f"transform.plan: the tracking plan {tmp_path / 'missing.yaml'} does not exist",
        "privacy.ip: 'hide' is not one of keep, drop",
        "privacy.hash_salt: hash_properties needs a salt; set hash_salt here or the "
        "MP2AMP_HASH_SALT environment variable (unsalted hashes of e-mails are reversible)",
        "run.concurrency: must be 1..64, got 1000",
    ]


def test_cross_field_checks(tmp_path: Path) -> None:
    path = write(tmp_path, """
[mixpanel]
timezone_changes = [{since = 2022-01-01, timezone = "UTC"}, {since = 2021-01-01, timezone = "Nowhere/X"}]
[source]
from_date = 2024-03-01
""")
    assert problems(path, env={"MIXPANEL_SERVICE_ACCOUNT": "no-colon"}) == [
        "mixpanel.timezone_changes[1].timezone: 'Nowhere/X' is not an IANA timezone "
        "(like 'America/Los_Angeles' or 'UTC')",
        # the item that parsed is still judged: one bad item hid this until the next run
        "mixpanel.timezone_changes: only legacy_time projects store project-local time; "
        "set legacy_time = true or remove the changes",
        "source.from_date/to_date: give both, or neither",
        # checked with the sources: a run of files never reads it
        "mixpanel.service_account: MIXPANEL_SERVICE_ACCOUNT must be 'username:secret'",
    ]
    path.write_text("""
[mixpanel]
timezone_changes = [{since = 2022-01-01, timezone = "UTC"}, {since = 2021-01-01, timezone = "UTC"}]
[source]
from_date = 2024-03-01
to_date = 2024-01-01
""")
    assert problems(path, env={"MIXPANEL_SERVICE_ACCOUNT": "no-colon"}) == [
        "mixpanel.timezone_changes: dates must be in increasing order, each once",
        "mixpanel.timezone_changes: only legacy_time projects store project-local time; "
        "set legacy_time = true or remove the changes",
        "source.to_date: 2024-01-01 is before from_date 2024-03-01",
        "mixpanel.service_account: MIXPANEL_SERVICE_ACCOUNT must be 'username:secret'",
    ]


def test_wrong_shapes(tmp_path: Path) -> None:
    path = write(tmp_path, 'mixpanel = 3\n[transform]\ngroups = "company_id"\n'
                           'revenue = []\n')
    assert problems(path) == [
        "mixpanel: must be a table ([mixpanel] or {...}), got an integer 3",
        "transform.groups: must be a list, got a string 'company_id'",
        "transform.revenue: must be a table ([transform.revenue] or {...}), got a list []",
    ]


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[mixpanel\n")
    assert problems(path)[0].startswith("not valid TOML: ")
    missing = tmp_path / "nope.toml"
    assert problems(missing) == [
        f"the config file {missing} does not exist; create it (see docs/examples/mp2amp.toml) "
        "or leave --config out"]


def test_secrets_from_environment_are_masked() -> None:
    env = {"AMPLITUDE_API_KEY": "amp-key-123", "AMPLITUDE_SECRET_KEY": "amp-secret-456",
           "MIXPANEL_SERVICE_ACCOUNT": "sa.user:mp-secret-789", "MIXPANEL_SECRET": "s3"}
    config = load_config(None, env=env)
    assert config.amplitude.api_key == Secret("amp-key-123")
    assert config.amplitude.api_key is not None
    assert config.amplitude.api_key.reveal() == "amp-key-123"
    assert config.mixpanel.service_account is not None
    text = repr(config) + str(config)
    for value in env.values():
        assert value not in text


def test_salt_environment_wins_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[privacy]\nhash_properties = ["email"]\nhash_salt = "file-salt"\n')
    from_file = load_config(path, env={}).privacy.hash_salt
    from_env = load_config(path, env={"MP2AMP_HASH_SALT": "env-salt"}).privacy.hash_salt
    assert from_file == Secret("file-salt") and from_env == Secret("env-salt")
    assert "file-salt" not in repr(load_config(path, env={}))


def test_overrides_beat_the_file_and_resolve_paths_from_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "mp2amp.toml"
    path.write_text('[transform]\nsession_gap_minutes = 30\n[run]\nworkdir = "state"\n')
    (tmp_path / "plan.yaml").write_text("events: {}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(path, {"transform.session_gap_minutes": 10,
                                "transform.plan": Path("plan.yaml"), "privacy.ip": None},
                         env={})
    assert config.transform.session_gap_minutes == 10
    assert config.transform.plan == tmp_path / "plan.yaml"
    assert config.run.workdir == tmp_path / "conf" / "state"
    assert config.privacy.ip == "keep"


def test_bad_override_is_reported_with_the_file_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "[run]\nconcurrency = 0\ntransform_workers = 9\n")
    assert problems(path, {"transform.session_gap_minutes": -5, "nosection": 1}) == [
        "nosection: an override names section.key",
        "transform.session_gap_minutes: must be 1..1440, got -5",
        "run.concurrency: must be 1..64, got 0",
        "run.transform_workers: must be 0..4, got 9",
    ]


def test_transform_workers_default_to_the_cores_and_can_be_set(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "[run]\n"), env={}).run.transform_workers is None
    config = load_config(write(tmp_path, "[run]\ntransform_workers = 2\n"), env={})
    assert config.run.transform_workers == 2


def test_plan_and_excluded_users_problems_reported_together(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text("unplanned_events: sometimes\nevents: []\n")
    (tmp_path / "excluded.txt").write_bytes(b"\xff\n")
    path = write(tmp_path, '[transform]\nplan = "plan.yaml"\n'
                           '[privacy]\nexclude_users = "excluded.txt"\n')
    config = load_config(path, env={})
    with pytest.raises(ConfigError) as info:
        config.transform_settings()
    plan = tmp_path / "plan.yaml"
    assert info.value.problems == [
        f"{plan}: unplanned_events: 'sometimes' is not one of keep, drop, flag",
        f"{plan}: events: must be a mapping of event name to its rules",
        f"privacy.exclude_users: {tmp_path / 'excluded.txt'} is not UTF-8 text (byte 0)",
    ]
    assert info.value.source == str(path)


def test_default_transform_settings_change_nothing() -> None:
    settings = load_config(None, env={}).transform_settings()
    assert settings.keep_ip and settings.timezone == "UTC" and not settings.revenue.enabled
    assert settings.plan is not None and settings.plan.events == {}


def test_missing_required_key_in_a_list_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "[mixpanel]\nlegacy_time = true\n"
                           'timezone_changes = [{since = 2022-01-01}, {timezone = "UTC", x = 1}]\n')
    assert problems(path) == [
        "mixpanel.timezone_changes[0].timezone: missing (required)",
        "mixpanel.timezone_changes[1].x: unknown key (known: since, timezone)",
        "mixpanel.timezone_changes[1].since: missing (required)",
    ]


def test_source_locations_resolve_against_the_file_urls_stay(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "mp2amp.toml"
    path.write_text('[source]\nfiles = ["exports/*.jsonl.gz", "s3://bucket/mp/*.gz", "/abs/x"]\n'
                    'identity_table = "gs://b/identity/"\n'
                    '[amplitude]\noutput_dir = "out"\n')
    config = load_config(path, env={})
    assert config.source.files == (str(tmp_path / "conf" / "exports" / "*.jsonl.gz"),
                                   "s3://bucket/mp/*.gz", "/abs/x")
    assert config.source.identity_table == "gs://b/identity/"
    assert config.amplitude.output_dir == str(tmp_path / "conf" / "out")


def test_credentials_from_the_environment_lose_surrounding_whitespace() -> None:
    """A key pasted with its newline was sent as is and refused by Amplitude, no hint."""
    cfg = load_config(None, {}, env={"AMPLITUDE_API_KEY": " abc123\n",
                                     "MIXPANEL_SECRET": "s3cret\r\n"})
    assert cfg.amplitude.api_key is not None and cfg.amplitude.api_key.reveal() == "abc123"
    assert cfg.mixpanel.secret is not None and cfg.mixpanel.secret.reveal() == "s3cret"
    assert load_config(None, {}, env={"AMPLITUDE_API_KEY": " \n"}).amplitude.api_key is None


def test_project_throttle_wait_reaches_the_uploader_and_is_bounded(tmp_path: Path) -> None:
    from mp2amp.pipeline.migrate import upload_settings

    path = tmp_path / "mp2amp.toml"
    path.write_text("[amplitude]\nproject_throttle_wait = 7.5\n")
    config = load_config(path, env={"AMPLITUDE_API_KEY": "k"})
    assert upload_settings(config).project_throttle_wait == 7.5
    assert upload_settings(load_config(None, env={"AMPLITUDE_API_KEY": "k"})) \
        .project_throttle_wait == 60.0  # Amplitude's documented wait
    path.write_text("[amplitude]\nproject_throttle_wait = 901\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path, env={})
    assert refused.value.problems == ["amplitude.project_throttle_wait: must be 0..900, got 901.0"]


def test_gzip_off_reaches_the_uploader_and_must_be_a_boolean(tmp_path: Path) -> None:
    from mp2amp.pipeline.migrate import upload_settings

    path = tmp_path / "mp2amp.toml"
    path.write_text("[amplitude]\ngzip = false\n")
    assert upload_settings(load_config(path, env={"AMPLITUDE_API_KEY": "k"})).gzip is False
    assert upload_settings(load_config(None, env={"AMPLITUDE_API_KEY": "k"})).gzip is True
    path.write_text('[amplitude]\ngzip = "no"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path, env={})
    assert len(refused.value.problems) == 1 and "amplitude.gzip" in refused.value.problems[0]
