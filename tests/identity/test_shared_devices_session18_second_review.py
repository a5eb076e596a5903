"""Session 18, second review of cb87293 (Original ID Merge shared devices) and 2132fb5
(the work folder's ``staged/`` marker).

Tests marked ``xfail(strict=True, reason=...)`` show a defect: they pass once it is fixed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.emulators.amplitude.store import EventStore
from mp2amp.identity import IdentityGraph
from mp2amp.models import Skip
from mp2amp.pipeline import stagedfolder
from mp2amp.pipeline.migrate import migrate
from mp2amp.transform.events import Transformer
from mp2amp.transform.privacy import PrivacyRules
from mp2amp.transform.settings import TransformSettings
from shared_kit import amplitude_emulator, cli_workspace

KEY = "review18b-shared-key"
T0 = 1_709_600_000  # 2024-03-05 00:53:20 UTC


def rec(name: str, dt: int, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0 + dt, "mp_lib": "web", **props}}


def fates(graph: IdentityGraph, records: list[dict[str, Any]], listed: list[str]) -> list[str]:
    for r in records:
        graph.observe(r)
    graph.finish()
    transformer = Transformer(TransformSettings(privacy=PrivacyRules(excluded_users=listed)))
    transformer.exclude_merged_users(graph.resolve, graph.shared_device)
    out = [transformer.event(r, graph.resolve(r["properties"])) for r in records]
    return ["skip" if isinstance(o, Skip) else "sent" if isinstance(o, dict) else repr(o)
            for o in out]


# --- shared devices ------------------------------------------------------------------------


def tablet_then_merge() -> list[dict[str, Any]]:
    """Alice logs in on the tablet and uses her phone; her second account bob-0001 logs in
    on the tablet (refused: the tablet is Alice's); support later merges the two accounts
    with $merge: one person, who used the tablet alone."""
    return [
        rec("Login", 0, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                    "$device_id": "tablet-1"}),
        rec("Page", 1, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                   "$device_id": "phone-A"}),
        rec("Login", 10, distinct_id="bob-0001", **{"$user_id": "bob-0001",
                                                    "$device_id": "tablet-1"}),
        rec("$merge", 20, distinct_id="alice-001",
            **{"$distinct_ids": ["alice-001", "bob-0001"]}),
        rec("Page", 30, distinct_id="bob-0001", **{"$user_id": "bob-0001",
                                                   "$device_id": "laptop-B"}),
    ]


@pytest.mark.parametrize("budget", [2_000_000, 4])
def test_a_device_whose_two_users_were_merged_later_is_not_shared(
        tmp_path: Path, budget: int, caplog: pytest.LogCaptureFixture) -> None:
    with IdentityGraph("original", tmp_path, memory_budget_ids=budget) as graph, \
            caplog.at_level(logging.WARNING, logger="mp2amp.transform.privacy"):
        out = fates(graph, tablet_then_merge(), ["tablet-1"])
        users = {graph.resolve(r["properties"]).user_id for r in tablet_then_merge()}
        assert len(users) == 1, users  # one person in the end
        report = graph.report.as_dict()
    assert report["shared_devices"] == 0, report
    assert "several users" not in caplog.text
    # README: a device merged into a user excludes all of that user's events
    assert out == ["skip"] * 5, out


def renamed_server_user() -> list[dict[str, Any]]:
    """A backend tracks a customer by e-mail (server-side events carrying the browser's
    $device_id, no $user_id); the customer's short login alias is created; when the
    customer changes e-mail the backend sends $identify(new, $anon_id=old), which Mixpanel
    refuses (the old e-mail is no anonymous ID). No device is shared by anyone."""
    old, new = "carol@old.example", "carol@new.example"
    return [
        rec("Checkout", 0, distinct_id=old, **{"$device_id": "browser-C1"}),
        rec("$create_alias", 1, distinct_id=old, alias="carol-login"),
        rec("Page", 2, distinct_id="carol-login", **{"$device_id": "browser-C2"}),
        rec("$identify", 10, distinct_id=new, **{"$identified_id": new, "$anon_id": old}),
        rec("Checkout", 11, distinct_id=new, **{"$device_id": "browser-C3"}),
    ]


def test_a_server_side_user_named_anonymous_by_a_refused_identify_is_no_shared_device(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = renamed_server_user()
    with IdentityGraph("original", tmp_path) as graph, \
            caplog.at_level(logging.WARNING, logger="mp2amp.transform.privacy"):
        out = fates(graph, records, ["carol@old.example"])
        assert graph.report.refused_links == 1
        user = graph.resolve(records[0]["properties"]).user_id
        shared = graph.report.shared_devices
    assert shared == 0, graph.report.shared_device_examples
    assert "several users" not in caplog.text, caplog.text
    # the listed user is the one of the first three events, whatever ID they carry
    assert out == ["skip", "skip", "skip", "skip", "sent"], (out, user)


# --- the staged/ marker --------------------------------------------------------------------


def event_line(i: int) -> str:
    body = {"time": T0 + i, "$insert_id": f"ev-{i}", "distinct_id": f"user-{i:04d}",
            "mp_lib": "web"}
    return orjson.dumps({"event": "Page", "properties": body}).decode()


def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, work: Path) -> Any:
    cli_workspace(monkeypatch, tmp_path, KEY)
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / "2024-03-05.jsonl").write_text(
        "\n".join(event_line(i) for i in range(5)) + "\n")
    return load_config(None, {
        "source.files": [str(tmp_path / "in")], "amplitude.api_host": url,
        "run.workdir": str(work), "mixpanel.timezone": "UTC"},
        env={"AMPLITUDE_API_KEY": KEY})


def stored(data: Path) -> list[str]:
    return sorted(str(e.get("insert_id")) for e in EventStore(data).iter_events())


@pytest.mark.parametrize("name", ["mixpanel-dump-2024-03.json.part", ".stage-backup"])
def test_a_new_run_never_deletes_the_users_part_files_in_an_unmarked_staged_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """workdir "." and a folder of the user's own called staged, where a browser is still
    downloading an export (Firefox writes NAME.part) or a backup folder sits: README says
    a new run stops on a staged/ of other files, and other files there are left alone."""
    work = tmp_path / "w"
    mine = work / "staged" / name
    mine.parent.mkdir(parents=True)
    if name.endswith(".part"):
        mine.write_text('{"event": "half a download"\n')
    else:
        mine.mkdir()
        (mine / "notes.txt").write_text("mine")
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        config = project(tmp_path, monkeypatch, url, work)
        try:
            migrate(config)
        except Exception as exc:  # refused, naming the file: fine too
            assert name in str(exc), exc
    assert mine.exists(), sorted(p.name for p in (work / "staged").iterdir())


class Killed(Exception):
    """Stands for kill -9 of migrate."""


def test_a_resume_adopts_an_unmarked_folder_holding_its_own_unrecorded_staged_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An mp2amp from before the marker, killed between renaming a window's staged copy
    into place and recording it (with several staging workers, every window after a slow
    first one): the only file in staged/ is named as this ledger's window stages."""
    from mp2amp.ledger import Ledger

    work = tmp_path / "w"
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        config = project(tmp_path, monkeypatch, url, work)

        def kill(self: Ledger, *args: Any, **kwargs: Any) -> None:
            raise Killed

        with monkeypatch.context() as patch:
            patch.setattr(Ledger, "mark_extracted", kill)
            with pytest.raises(Killed):
                migrate(config)
        copies = sorted(p.name for p in (work / "staged").iterdir())
        assert len(copies) == 1 and copies[0].endswith(".jsonl"), copies
        stagedfolder.marker(work / "staged").unlink()  # as an older mp2amp left it
        result = migrate(config, resume=True)
        assert result.exit_code == 0
    # each event once (mp2amp's insert_id is the Mixpanel one plus a digest of the record)
    assert [i.rsplit("-", 1)[0] for i in stored(tmp_path / "amp")] == [f"ev-{i}" for i in range(5)]


def test_a_new_run_does_not_trust_a_marker_left_without_its_ledger(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """workdir "." after a finished migration whose files were removed by hand (`rm -r
    staged export scratch ledger.sqlite* migrate.lock`: the hidden marker stays); later a
    folder of the user's own hourly dumps is called staged. A marker can only be true
    beside a ledger, and README: a new run whose staged/ holds other files stops."""
    work = tmp_path / "w"
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        config = project(tmp_path, monkeypatch, url, work)
        assert migrate(config).exit_code == 0
        for name in ("staged", "export", "scratch"):
            if (work / name).is_dir():
                shutil.rmtree(work / name)
        for path in work.iterdir():
            if not path.name.startswith(".") and path.is_file():
                path.unlink()
        assert [p.name for p in work.iterdir()] == [stagedfolder.MARKER]
        mine = work / "staged" / "events-2024010100.jsonl"
        mine.parent.mkdir()
        mine.write_text('{"event": "mine"}\n')
        try:
            migrate(config)
        except Exception as exc:  # refused, naming the file: fine too
            assert mine.name in str(exc), exc
    assert mine.exists()


@pytest.mark.parametrize("budget", [2_000_000, 4])
def test_an_id_named_a_user_only_by_a_refused_identify_is_never_a_shared_device(
        tmp_path: Path, budget: int) -> None:
    """Regression guard: ``ranked`` (without_anon of every link's roles) keeps the USER bit
    a refused link gave: dave-0001, named a user only by his refused $identify on Alice's
    tablet, is not a device when a third user's $identify names him anonymous; the tablet
    is, in memory and spilled alike."""
    tablet = "5f0c6a1e-3b2d-4c6e-8f7a-9b0c1d2e3f4a"
    records = [
        rec("$identify", 0, distinct_id="alice-001",
            **{"$identified_id": "alice-001", "$anon_id": tablet}),
        rec("$identify", 5, distinct_id="dave-0001",
            **{"$identified_id": "dave-0001", "$anon_id": tablet}),
        rec("$identify", 9, distinct_id="erin-0001",
            **{"$identified_id": "erin-0001", "$anon_id": "dave-0001"}),
    ]
    with IdentityGraph("original", tmp_path, memory_budget_ids=budget) as graph:
        fates(graph, records, [])
        assert graph.report.refused_links == 2
        assert [graph.shared_device(i) for i in (tablet, "dave-0001")] == [True, False]
        assert graph.report.shared_devices == 1
