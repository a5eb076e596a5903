"""Other sources end in the same Amplitude events as the files: the Mixpanel emulator's
Export API with its stream faults on, and the files through a local S3 server (moto) and
a local GCS server (gcp-storage-emulator)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    TIMEZONE,
    Key,
    Project,
    amplitude,
    assert_counts_exactly_once,
    assert_exactly_once,
    get_json,
    stored_counts,
)

from mp2amp.config import load_config
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.pipeline.demo import export_dates
from mp2amp.pipeline.migrate import EXIT_OK, MigrateResult, migrate

# The generated project's days (2024-01-01..03 in Los Angeles) as a newer project's Export
# API serves them: UTC days, 01-01..01-04.
FIRST, LAST = date(2024, 1, 1), date(2024, 1, 4)


@dataclass
class ExportRun:
    result: MigrateResult
    counts: dict[Key, int]
    mixpanel_stats: dict[str, Any]


@pytest.fixture(scope="module")
def export_run(project: Project, tmp_path_factory: pytest.TempPathFactory) -> ExportRun:
    """One migration from the Mixpanel emulator's Export API, most streams broken."""
    tmp = tmp_path_factory.mktemp("export")
    mixpanel = MixpanelEmulator(MixpanelConfig(
        data_dir=project.root, fail_rate=0.6, seed=4,
        fault_kinds=("terminated_early", "drop", "split"), export_per_hour=None,
        export_per_second=None))
    with mixpanel.running() as mp_url, amplitude(tmp / "amp") as amp_url:
        cfg = load_config(None, {
            "source.from_date": FIRST.isoformat(), "source.to_date": LAST.isoformat(),
            "mixpanel.api_host": mp_url, "mixpanel.timezone": TIMEZONE,
            "amplitude.api_host": amp_url, "run.workdir": str(tmp / "work"),
        }, env={"AMPLITUDE_API_KEY": API_KEY, "MIXPANEL_SECRET": "emulator-secret"})
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides={
            "per_hour": 10_000, "per_second": 100, "backoff_base": 0.01, "backoff_cap": 0.05})
        return ExportRun(result, stored_counts(amp_url), get_json(mp_url + "/_emulator/stats"))


def test_export_api_with_stream_faults(project: Project, export_run: ExportRun) -> None:
    result = export_run.result
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert export_dates(orjson.loads((project.root / "project.json").read_bytes())) == (FIRST, LAST)
    assert [w.window for w in result.windows] == [f"export:2024-01-0{d}" for d in (1, 2, 3, 4)]
    assert sum(export_run.mixpanel_stats["faults_injected"].values()) >= 3
    assert result.totals["sent"] == len(project.expected)
    assert all(n == 1 for n in export_run.counts.values())
    # events with a Mixpanel $insert_id get the same Amplitude insert_id from either source
    with_id = {k for k in project.expected if not k[1].startswith("mp-")}
    assert with_id <= export_run.counts.keys()


def test_export_api_gives_the_same_insert_ids_as_files(project: Project,
                                                       export_run: ExportRun) -> None:
    assert_counts_exactly_once(export_run.counts, project.expected)


def test_export_windows_of_several_days_spend_fewer_queries(project: Project,
                                                            tmp_path: Path) -> None:
    """``[source] export_window_days``: one query per three days (Mixpanel allows 60 an
    hour), streams broken as above, each event once; a resume after the run refetches
    nothing."""
    mixpanel = MixpanelEmulator(MixpanelConfig(
        data_dir=project.root, fail_rate=0.5, seed=7,
        fault_kinds=("terminated_early", "drop", "split"), export_per_hour=None,
        export_per_second=None))
    with mixpanel.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = load_config(None, {
            "source.from_date": FIRST.isoformat(), "source.to_date": LAST.isoformat(),
            "source.export_window_days": 3,
            "mixpanel.api_host": mp_url, "mixpanel.timezone": TIMEZONE,
            "amplitude.api_host": amp_url, "run.workdir": str(tmp_path / "work"),
        }, env={"AMPLITUDE_API_KEY": API_KEY, "MIXPANEL_SECRET": "emulator-secret"})
        overrides = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01,
                     "backoff_cap": 0.05}
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=overrides)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert [w.window for w in result.windows] == ["export:2024-01-01..2024-01-03",
                                                      "export:2024-01-04"]
        assert_exactly_once(amp_url, project.expected)
        stats = get_json(mp_url + "/_emulator/stats")
        queries = stats["requests"]["export_requests"]
        refetched = sum(n for kind, n in stats["faults_injected"].items() if kind != "split")
        assert refetched >= 1 and queries == 2 + refetched  # split lines need no refetch
        again = migrate(cfg, resume=True, upload_overrides=FAST, mixpanel_overrides=overrides)
        assert again.exit_code == EXIT_OK
        assert get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"] == queries


@pytest.fixture(scope="module")
def s3(project: Project, s3_server: dict[str, Any]) -> dict[str, Any]:
    """The shared moto S3 server, holding the project's day files."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server["endpoint_url"],
                          region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="mp-export")
    for f in sorted(project.events.iterdir()):
        client.put_object(Bucket="mp-export", Key=f"events/{f.name}", Body=f.read_bytes())
    return s3_server


def test_s3_source(project: Project, tmp_path: Path, s3: dict[str, Any]) -> None:
    with amplitude(tmp_path / "amp") as url:
        cfg = load_config(None, {
            "source.files": ["s3://mp-export/events/*.jsonl.gz"], "mixpanel.timezone": TIMEZONE,
            "amplitude.api_host": url, "run.workdir": str(tmp_path / "work"),
        }, env={"AMPLITUDE_API_KEY": API_KEY})
        result = migrate(cfg, upload_overrides=FAST, storage_options=s3)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert [w.window for w in result.windows] == [
            f"s3://mp-export/events/2024-01-0{d}.jsonl.gz" for d in (1, 2, 3)]
        assert_exactly_once(url, project.expected)
    # a bad line's dead letter names the S3 object it was read from
    rows = (tmp_path / "work" / "dead-letters.jsonl").read_text().splitlines()
    assert rows and all('"source":"s3://mp-export/events/' in r for r in rows)


@pytest.fixture(scope="module")
def gcs(project: Project, gcs_server: dict[str, Any]) -> dict[str, Any]:
    """The shared GCS server, holding the project's day files."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="mp2amp-test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_server["endpoint_url"]})
    bucket = client.create_bucket("mp-export")
    for f in sorted(project.events.iterdir()):
        bucket.blob(f"events/{f.name}").upload_from_filename(str(f))
    return gcs_server


def test_gcs_source(project: Project, tmp_path: Path, gcs: dict[str, Any]) -> None:
    with amplitude(tmp_path / "amp") as url:
        cfg = load_config(None, {
            "source.files": ["gs://mp-export/events/*.jsonl.gz"], "mixpanel.timezone": TIMEZONE,
            "source.storage_options": gcs,  # from the config this time, as a user gives them
            "amplitude.api_host": url, "run.workdir": str(tmp_path / "work"),
        }, env={"AMPLITUDE_API_KEY": API_KEY})
        result = migrate(cfg, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert [w.window for w in result.windows] == [
            f"gs://mp-export/events/2024-01-0{d}.jsonl.gz" for d in (1, 2, 3)]
        assert_exactly_once(url, project.expected)
    # a bad line's dead letter names the GCS object it was read from
    rows = (tmp_path / "work" / "dead-letters.jsonl").read_text().splitlines()
    assert rows and all('"source":"gs://mp-export/events/' in r for r in rows)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_transform_reads_remote_files_with_the_configs_storage_options(
        project: Project, tmp_path: Path, scheme: str, request: pytest.FixtureRequest) -> None:
    """``mp2amp transform`` reaches the bucket through ``[source] storage_options``, as
    ``migrate`` does: the same events as from the local files."""
    from typer.testing import CliRunner

    from mp2amp.cli import app

    options = request.getfixturevalue("s3" if scheme == "s3" else "gcs")
    flat = {k: v for k, v in options.items() if isinstance(v, str)}  # what TOML holds here
    table = ", ".join(f'{k} = "{v}"' for k, v in flat.items())
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\n'
                   f'storage_options = {{ {table} }}\n[run]\nworkdir = "{tmp_path / "work"}"\n')
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["transform", f"{scheme}://mp-export/events/*.jsonl.gz",
                                      "-c", str(cfg), "-o", str(out), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    keys = []
    for raw in out.read_bytes().splitlines():
        event = orjson.loads(raw)
        keys.append((event.get("device_id") or event.get("user_id"), event["insert_id"]))
    assert len(keys) == len(set(keys)) and frozenset(keys) == project.expected


def test_an_export_run_without_credentials_leaves_the_work_folder_usable(
        project: Project, tmp_path: Path) -> None:
    """Called from Python (not only through the CLI): the missing credentials are a config
    problem before anything is recorded, so the next call, with them, starts normally."""
    from mp2amp.errors import ConfigError

    mixpanel = MixpanelEmulator(MixpanelConfig(
        data_dir=project.root, export_per_hour=None, export_per_second=None))
    with mixpanel.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        overrides = {"source.from_date": FIRST.isoformat(), "source.to_date": LAST.isoformat(),
                     "mixpanel.api_host": mp_url, "mixpanel.timezone": TIMEZONE,
                     "amplitude.api_host": amp_url, "run.workdir": str(tmp_path / "work")}
        bare = load_config(None, overrides, env={"AMPLITUDE_API_KEY": API_KEY})
        with pytest.raises(ConfigError, match="MIXPANEL_SERVICE_ACCOUNT"):
            migrate(bare, upload_overrides=FAST)
        assert not (tmp_path / "work" / "ledger.sqlite").exists()
        full = load_config(None, overrides, env={"AMPLITUDE_API_KEY": API_KEY,
                                                 "MIXPANEL_SECRET": "any-secret"})
        result = migrate(full, upload_overrides=FAST, mixpanel_overrides={
            "per_hour": 10_000, "per_second": 100})
    assert result.exit_code == EXIT_OK and result.totals["sent"] == len(project.expected)
