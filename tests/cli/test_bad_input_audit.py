"""Bad input through ``mp2amp migrate`` and ``mp2amp transform``: exact exit codes, a
message that names the file, line and field and says what to do, no traceback, and every
other record still delivered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from shared_kit import amplitude_emulator, cli_workspace

KEY = "audit-key"


@pytest.fixture(scope="module")
def amp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with amplitude_emulator(tmp_path_factory.mktemp("amp"), KEY) as url:
        yield url


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_workspace(monkeypatch, tmp_path, KEY)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def get_json(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as resp:
        return orjson.loads(resp.read())


def flat(text: str) -> str:
    return " ".join(text.split())


def event(n: int, **props: Any) -> dict[str, Any]:
    base = {"time": 1700000000 + n, "distinct_id": f"user-{n:04d}",
            "$insert_id": f"ins-{n:06d}"}
    return {"event": "Page View", "properties": {**base, **props}}


def jsonl(*records: Any) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mp2amp.toml"
    path.write_text(body, encoding="utf-8")
    return path


def migrate_config(tmp_path: Path, files: list[Path], url: str, extra: str = "") -> Path:
    names = ", ".join(f'"{f}"' for f in files)
    return write_config(tmp_path, f'[source]\nfiles = [{names}]\n[amplitude]\n'
                                  f'api_host = "{url}"\n[run]\n'
                                  f'workdir = "{tmp_path / "work"}"\n{extra}')


# --- messages that name a config section ------------------------------------------------


def test_workdir_that_is_a_file_names_the_run_section(env: None, tmp_path: Path,
                                                      amp_url: str) -> None:
    data = tmp_path / "day.jsonl"
    data.write_bytes(jsonl(event(1)))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    cfg = write_config(tmp_path, f'[source]\nfiles = ["{data}"]\n[amplitude]\n'
                                 f'api_host = "{amp_url}"\n[run]\nworkdir = "{blocker}"\n')
    result = invoke("migrate", "-c", str(cfg), "--quiet")
    assert result.exit_code == 2
    message = flat(result.stderr)
    # rich markup used to swallow "[run]", leaving "set  workdir"
    assert f"cannot create the work folder {blocker}: it is a file, not a folder" in message
    assert "set [run] workdir to a writable folder" in message
    assert "Traceback" not in result.stderr


def test_transform_without_inputs_names_the_source_section(env: None) -> None:
    result = invoke("transform")
    assert result.exit_code == 2
    assert "name them on the command line or in [source] files" in flat(result.stderr)


# --- config -----------------------------------------------------------------------------


def test_files_and_export_dates_together_are_refused(env: None, tmp_path: Path,
                                                     amp_url: str) -> None:
    data = tmp_path / "day.jsonl"
    data.write_bytes(jsonl(event(1)))
    cfg = migrate_config(tmp_path, [data], amp_url)
    text = cfg.read_text().replace("[source]\n", '[source]\nfrom_date = 2024-01-01\n'
                                                 'to_date = 2024-01-02\n')
    cfg.write_text(text)
    result = invoke("migrate", "-c", str(cfg), "--quiet")
    # the dates used to be ignored without a word and every file migrated
    assert result.exit_code == 2
    message = flat(result.stderr)
    assert f"invalid configuration in {cfg}" in message
    assert "source.files: give files or from_date/to_date (the Export API), not both" in message
    assert not (tmp_path / "work" / "ledger.sqlite").exists()


def test_storage_options_take_booleans_and_tables(env: None, tmp_path: Path,
                                                  amp_url: str) -> None:
    """s3fs's own option types: ``anon = "false"`` would be a truthy string."""
    from mp2amp.config import load_config

    body = ('[source]\nfiles = ["s3://bucket/events/*.gz"]\nstorage_options = {anon = true, '
            'client_kwargs = {region_name = "eu-west-1"}, default_block_size = 1048576}\n')
    cfg = load_config(write_config(tmp_path, body))
    assert cfg.source.storage_options == {"anon": True, "default_block_size": 1048576,
                                          "client_kwargs": {"region_name": "eu-west-1"}}
    data = tmp_path / "day.jsonl"
    data.write_bytes(jsonl(event(1), event(2)))
    path = migrate_config(tmp_path, [data], amp_url)
    path.write_text(path.read_text().replace(
        "[amplitude]", "storage_options = {anon = true}\n[amplitude]"))
    result = invoke("migrate", "-c", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["totals"]["sent"] == 2


def test_storage_options_that_is_not_a_table(env: None, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, '[source]\nfiles = ["x.jsonl"]\nstorage_options = "anon"\n')
    result = invoke("transform", "-c", str(cfg))
    assert result.exit_code == 2
    assert "source.storage_options: must be a table, got a string 'anon'" in flat(result.stderr)


@pytest.mark.parametrize(("env_var", "expected"), [
    (None, "mixpanel: the Export API (source.from_date/to_date) needs credentials: set "
           "MIXPANEL_SERVICE_ACCOUNT (user:secret) or MIXPANEL_SECRET in the environment"),
    ("MIXPANEL_SERVICE_ACCOUNT", "mixpanel.project_id: required with a service account"),
])
def test_export_run_without_credentials_can_be_run_again(
        env: None, tmp_path: Path, amp_url: str, monkeypatch: pytest.MonkeyPatch,
        env_var: str | None, expected: str) -> None:
    if env_var:
        monkeypatch.setenv(env_var, "user:secret")
    cfg = write_config(tmp_path, f'[source]\nfrom_date = 2024-01-01\nto_date = 2024-01-02\n'
                                 f'[mixpanel]\napi_host = "http://127.0.0.1:9"\n'
                                 f'[amplitude]\napi_host = "{amp_url}"\n'
                                 f'[run]\nworkdir = "{tmp_path / "work"}"\n')
    for _ in range(2):
        result = invoke("migrate", "-c", str(cfg), "--quiet")
        assert result.exit_code == 2
        message = flat(result.stderr)
        # the file is named, and the second try is not refused as "already holds a migration"
        assert f"invalid configuration in {cfg}" in message and expected in message
        assert "already holds a migration" not in message
    assert not (tmp_path / "work" / "ledger.sqlite").exists()


# --- damaged files ------------------------------------------------------------------------


def _damaged_config(tmp_path: Path, files: list[Path], url: str, damaged: str) -> Path:
    names = ", ".join(f'"{f}"' for f in files)
    return write_config(tmp_path, f'[source]\nfiles = [{names}]\ndamaged_files = "{damaged}"\n'
                                  f'[amplitude]\napi_host = "{url}"\n[run]\n'
                                  f'workdir = "{tmp_path / "work"}"\n')


def test_a_file_cut_short_stops_the_run_before_anything_is_sent_then_resumes(
        env: None, tmp_path: Path, amp_url: str) -> None:
    """The default: a truncated download is restored and resumed, not half migrated (the
    records before the damage used to go out, the run exit 0, and no resume could add the
    rest: the window's batches were cut)."""
    import gzip

    whole = gzip.compress(jsonl(*(event(i) for i in range(7000, 9000))))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[:-8])
    other = tmp_path / "other.jsonl"
    other.write_bytes(jsonl(event(9500), event(9501)))
    cfg = migrate_config(tmp_path, [cut, other], amp_url)
    before = get_json(amp_url + "/_emulator/stats")["events_stored"]
    stopped = invoke("migrate", "-c", str(cfg), "--quiet")
    assert stopped.exit_code == 2
    assert flat(stopped.stderr) == (
        f"error: 1 input file(s) are cut short, and nothing of them was sent: {cut} is "
        "damaged after record 2000 (Compressed file ended before the end-of-stream marker "
        "was reached). Restore them (download again) and run the same `mp2amp migrate` "
        "command with --resume; or, to migrate what they hold up to the damage (the rest "
        'counted as one rejection), set [source] damaged_files = "keep" and resume')
    assert get_json(amp_url + "/_emulator/stats")["events_stored"] == before
    cut.write_bytes(whole)  # downloaded again
    resumed = invoke("migrate", "-c", str(cfg), "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    totals = orjson.loads(resumed.stdout)["totals"]
    assert (totals["read"], totals["sent"], totals["rejected"]) == (2002, 2002, 0)


def test_gzip_without_trailer_migrates_every_record(env: None, tmp_path: Path,
                                                    amp_url: str) -> None:
    import gzip

    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(jsonl(*(event(i) for i in range(1000, 3000))))[:-8])
    other = tmp_path / "other.jsonl"
    other.write_bytes(jsonl(event(5000), event(5001)))
    cfg = _damaged_config(tmp_path, [cut, other], amp_url, "keep")
    result = invoke("migrate", "-c", str(cfg), "--json")
    assert result.exit_code == 0, result.stderr
    totals = orjson.loads(result.stdout)["totals"]
    # the intact records before the cut used to be lost with it (up to 64 KB of them)
    assert (totals["read"], totals["sent"], totals["rejected"]) == (2003, 2002, 1)
    dead = [orjson.loads(x) for x in (tmp_path / "work" / "dead-letters.jsonl").read_bytes()
            .splitlines()]
    assert [(d["source"], d["line"], d["reason"]) for d in dead] == [
        (str(cut), 2001, "truncated_file")]
    assert "restore the file and run again" in dead[0]["message"]


def test_zip_in_the_input_folder_stops_the_run_then_it_runs(env: None, tmp_path: Path,
                                                           amp_url: str) -> None:
    import zipfile

    folder = tmp_path / "events"
    folder.mkdir()
    (folder / "2024-01-01.jsonl").write_bytes(jsonl(event(1), event(2)))
    with zipfile.ZipFile(folder / "2024-01-02.jsonl", "w") as zf:
        zf.writestr("2024-01-02.jsonl", jsonl(event(3), event(4)))
    cfg = migrate_config(tmp_path, [folder], amp_url)
    result = invoke("migrate", "-c", str(cfg), "--quiet")
    # it used to be read as text: exit 0, its binary lines dead-lettered, its events lost
    assert result.exit_code == 2
    message = flat(result.stderr)
    assert (f"{folder / '2024-01-02.jsonl'} is a zip archive, not JSON lines or a JSON array "
            "(plain or gzip): unpack it and name the files inside, or leave it out of the "
            "inputs, and run again") in message
    assert "Traceback" not in result.stderr
    (folder / "2024-01-02.jsonl").write_bytes(jsonl(event(3), event(4)))  # unpacked
    again = invoke("migrate", "-c", str(cfg), "--json")  # no --resume needed
    assert again.exit_code == 0, again.stderr
    assert orjson.loads(again.stdout)["totals"]["sent"] == 4


def test_transform_of_an_array_with_a_too_deep_element(env: None, tmp_path: Path) -> None:
    deep = ('{"event":"D","properties":{"time":1700000000,"distinct_id":"deep-user","n":'
            + "[" * 5000 + "]" * 5000 + "}}")
    path = tmp_path / "export.json"
    path.write_bytes(b"[" + orjson.dumps(event(1)) + b"," + deep.encode() + b","
                     + orjson.dumps(event(2)) + b"]")
    result = invoke("transform", str(path), "-o", str(tmp_path / "out.jsonl"), "--json")
    # it used to end in a RecursionError traceback (exit 1) with nothing written
    assert result.exit_code == 0, result.stderr
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 2
    rejects = [orjson.loads(x) for x in
               (tmp_path / "out.jsonl.rejects.jsonl").read_bytes().splitlines()]
    assert [(r["source"], r["line"], r["reason"]) for r in rejects] == [
        (str(path), 2, "malformed_json")]
    assert "nests arrays and objects too deeply to be read" in rejects[0]["message"]


def test_config_saved_with_a_bom_is_read(env: None, tmp_path: Path) -> None:
    data = tmp_path / "day.jsonl"
    data.write_bytes(jsonl(event(1)))
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_bytes(b"\xef\xbb\xbf" + f'[source]\nfiles = ["{data}"]\n'.encode())
    result = invoke("transform", "-c", str(cfg), "-o", str(tmp_path / "out.jsonl"))
    # it used to be 'not valid TOML: Invalid statement (at line 1, column 1)', exit 2
    assert result.exit_code == 0, result.stderr
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 1


def test_config_that_is_not_utf8_names_the_byte(env: None, tmp_path: Path) -> None:
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_bytes("[run]\nworkdir = 'caf\u00e9'\n".encode("latin-1"))
    result = invoke("transform", "-c", str(cfg))
    assert result.exit_code == 2
    assert (f"invalid configuration in {cfg} (1 problem(s)); fix them and run again: - the "
            "config file is not UTF-8 text (line 2, column 15, byte 20); save it as UTF-8") in flat(result.stderr)


def test_pretty_printed_export_is_migrated(env: None, tmp_path: Path, amp_url: str) -> None:
    """``jq . export.json > day.jsonl``: every line used to be dead-lettered, exit 0."""
    path = tmp_path / "day.jsonl"
    props = {f"p{k}": k for k in range(12)}  # more lines than a split record is joined from
    path.write_text("".join(orjson.dumps(event(i, **props), option=orjson.OPT_INDENT_2)
                            .decode() + "\n" for i in range(7000, 7050)))
    cfg = migrate_config(tmp_path, [path], amp_url)
    result = invoke("migrate", "-c", str(cfg), "--json")
    assert result.exit_code == 0, result.stderr
    totals = orjson.loads(result.stdout)["totals"]
    assert (totals["read"], totals["sent"], totals["rejected"]) == (50, 50, 0)
