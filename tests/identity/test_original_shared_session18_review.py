"""Session 18 review: Original ID Merge's shared devices (f0d9be8) and how they meet
``[privacy] exclude_users``.

Tests marked ``xfail(strict=True, reason=...)`` show a defect: they pass once it is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.emulators.amplitude.store import EventStore
from mp2amp.identity import IdentityGraph
from mp2amp.models import Skip
from mp2amp.transform.events import Transformer
from mp2amp.transform.privacy import PrivacyRules
from mp2amp.transform.settings import TransformSettings
from shared_kit import amplitude_emulator, cli_workspace

KEY = "review18-original-shared-key"
T0 = 1_709_600_000  # 2024-03-05 00:53:20 UTC
# a mixpanel-js (before 2.46) cookie ID: in Original ID Merge the device's distinct_id
# and $device_id, with no "$device:" prefix
TABLET = "18b4e0ca3e2427-0b87eda4203b97-26031e51-1fa400-18b4e0ca3e2427"


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


def family_tablet() -> list[dict[str, Any]]:
    """Alice logs in on the tablet and uses her phone; Bob later logs in on the tablet
    (his $user_id + $device_id link is refused: the tablet keeps Alice)."""
    return [
        rec("Login", 0, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                    "$device_id": "tablet-1"}),
        rec("Page", 1, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                   "$device_id": "phone-A"}),
        rec("Login", 10, distinct_id="bob-0001", **{"$user_id": "bob-0001",
                                                    "$device_id": "tablet-1"}),
    ]


# --- a shared device listed by its device_id ------------------------------------------------


def test_a_shared_device_listed_by_its_device_id_does_not_exclude_its_first_user(
        tmp_path: Path) -> None:
    """README: IDs are matched against device_id too, and "a device several users shared
    (in Original ID Merge: one whose link to a second user was refused) excludes only its
    own events". Listing "$device:tablet-1" works; listing its device_id "tablet-1" (as
    Amplitude and Mixpanel's $device_id show it) takes Alice's phone event too. Simplified
    ID Merge gets the same list right."""
    listed = ["bob-0001", "tablet-1"]
    (tmp_path / "s").mkdir()
    with IdentityGraph("simplified", tmp_path / "s") as graph:
        assert fates(graph, family_tablet(), listed) == ["skip", "sent", "skip"]
    with IdentityGraph("original", tmp_path) as graph:
        out = fates(graph, family_tablet(), listed)
        assert graph.shared_device("tablet-1")
    assert out == ["skip", "sent", "skip"], out  # Alice's phone event: she asked nothing


@pytest.fixture
def amp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "project"
    folder.mkdir()
    cli_workspace(monkeypatch, folder, KEY)
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        yield folder, url


def line(name: str, dt: int, insert_id: str, **props: Any) -> str:
    body = {"time": T0 + dt, "$insert_id": insert_id, "mp_lib": "web", **props}
    return orjson.dumps({"event": name, "properties": body}).decode()


def cookie_tablet_lines() -> list[str]:
    """mixpanel-js in an Original ID Merge project: the tablet's cookie ID is its
    distinct_id until $identify; Bob's later $identify from the same cookie is refused."""
    tab = {"$device_id": TABLET}
    return [
        line("Page", 0, "t-anon", distinct_id=TABLET, **tab),
        line("$identify", 1, "t-idA", distinct_id="alice-001", **{"$anon_distinct_id": TABLET},
             **tab, **{"$user_id": "alice-001"}),
        line("Page", 2, "a-tab", distinct_id="alice-001", **tab, **{"$user_id": "alice-001"}),
        line("Page", 3, "a-phone", distinct_id="alice-001",
             **{"$device_id": "phone-A-0001", "$user_id": "alice-001"}),
        line("$identify", 10, "t-idB", distinct_id="bob-0001", **{"$anon_distinct_id": TABLET},
             **tab, **{"$user_id": "bob-0001"}),
        line("Page", 11, "b-tab", distinct_id="bob-0001", **tab, **{"$user_id": "bob-0001"}),
        line("Page", 12, "b-laptop", distinct_id="bob-0001",
             **{"$device_id": "laptop-B-0001", "$user_id": "bob-0001"}),
    ]


def migrate(folder: Path, lines: list[str], config: str) -> dict[str, Any]:
    (folder / "events").mkdir(exist_ok=True)
    (folder / "events" / "2024-03-05.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "mp2amp.toml").write_text(config)
    result = CliRunner().invoke(app, ["migrate", "-c", str(folder / "mp2amp.toml"), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr or result.output
    parsed: dict[str, Any] = orjson.loads(result.stdout)
    return parsed


def stored_ids(data: Path) -> list[tuple[Any, Any, Any]]:
    return sorted((e.get("insert_id", "").rsplit("-", 1)[0], e.get("user_id"),
                   e.get("device_id")) for e in EventStore(data).iter_events())


def test_migrate_listing_a_shared_cookie_device_keeps_its_first_users_other_events(
        amp: tuple[Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Bob's deletion request lists his ID and the tablet's distinct_id as Mixpanel shows
    it. The run warns "only their own events are excluded", yet Alice's phone event (no
    tablet ID on it) is never sent."""
    folder, url = amp
    (folder / "excluded.txt").write_text(f"bob-0001\n{TABLET}\n")
    with caplog.at_level(logging.WARNING, logger="mp2amp.transform.privacy"):
        result = migrate(folder, cookie_tablet_lines(),
                         f'[mixpanel]\nid_merge = "original"\n[source]\nfiles = ["events"]\n'
                         f'[amplitude]\napi_host = "{url}"\n'
                         '[privacy]\nexclude_users = "excluded.txt"\n')
    assert "only their own events are excluded" in caplog.text  # what the run promises
    assert result["totals"]["rejected"] == 0
    stored = stored_ids(tmp_path / "amp")
    assert all(user != "bob-0001" and device != TABLET for _, user, device in stored), stored
    assert [i for i, _, _ in stored] == ["a-phone"], stored


# --- what counts as a shared device ----------------------------------------------------------


def test_a_refused_second_alias_does_not_make_the_users_own_device_shared(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The classic alias-on-every-login bug: alias("alice@x.io") on her second device is
    refused (an alias maps to one distinct_id), then $identify merges that device into
    Alice. Every event resolves to Alice, the device was never seen with another user;
    listing it must exclude all of Alice (README: "a device merged into a user excludes
    all of that user's events"), not only the device's own events."""
    d1 = "11111111-1b2d-4c6e-8f7a-9b0c1d2e3f4a"
    d2 = "22222222-1b2d-4c6e-8f7a-9b0c1d2e3f4a"
    records = [
        rec("Page", 0, distinct_id=f"$device:{d1}", **{"$device_id": d1}),
        rec("$create_alias", 1, distinct_id=f"$device:{d1}", alias="alice@x.io",
            **{"$device_id": d1}),
        rec("Page", 2, distinct_id="alice@x.io", **{"$device_id": d1}),
        rec("Page", 10, distinct_id=f"$device:{d2}", **{"$device_id": d2}),
        rec("$create_alias", 11, distinct_id=f"$device:{d2}", alias="alice@x.io",
            **{"$device_id": d2}),
        rec("$identify", 12, distinct_id="alice@x.io", **{"$anon_distinct_id": f"$device:{d2}",
                                                         "$device_id": d2}),
        rec("Page", 13, distinct_id="alice@x.io", **{"$device_id": d2}),
    ]
    with IdentityGraph("original", tmp_path) as graph, \
            caplog.at_level(logging.WARNING, logger="mp2amp.transform.privacy"):
        out = fates(graph, records, [f"$device:{d2}"])
        assert {graph.resolve(r["properties"]).user_id for r in records} == {"alice@x.io"}
        assert not graph.shared_device(d2)
    assert [out[i] for i in (0, 2, 3, 6)] == ["skip"] * 4, out
    assert "several users" not in caplog.text


def test_listing_only_users_logs_no_shared_device_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Only Bob is listed; his events are excluded. The run must not warn that "1 listed
    device(s) were used by several users (e.g. bob-0001)": bob-0001 is no device, and the
    advice "list those users' IDs too" sends the operator looking for nothing."""
    with IdentityGraph("original", tmp_path) as graph, \
            caplog.at_level(logging.WARNING, logger="mp2amp.transform.privacy"):
        out = fates(graph, family_tablet(), ["bob-0001"])
    assert out == ["sent", "sent", "skip"], out
    assert "bob-0001" not in caplog.text, caplog.text


def test_the_identity_report_counts_original_shared_devices(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    with IdentityGraph("simplified", tmp_path / "s") as graph:
        fates(graph, family_tablet(), [])
        assert graph.report.shared_devices == 1
    with IdentityGraph("original", tmp_path) as graph:
        fates(graph, family_tablet(), [])
        assert graph.shared_device("tablet-1")
        report = graph.finish().as_dict()
    assert report["refused_links"] == 1
    assert report["shared_devices"] == 1, report


# --- the cap ---------------------------------------------------------------------------------


def two_tablets() -> list[dict[str, Any]]:
    out = []
    for k, (first, second) in enumerate([("alice-001", "bob-0001"), ("carol-001", "dave-0001")]):
        tablet = f"tablet-{k}"
        out += [rec("Login", 100 * k, distinct_id=first, **{"$user_id": first,
                                                             "$device_id": tablet}),
                rec("Page", 100 * k + 1, distinct_id=first, **{"$user_id": first,
                                                                "$device_id": f"phone-{k}"}),
                rec("Login", 100 * k + 10, distinct_id=second, **{"$user_id": second,
                                                                  "$device_id": tablet})]
    return out


@pytest.mark.parametrize("budget", [2_000_000, 4])
def test_past_the_refused_ids_cap_a_shared_device_still_spares_its_first_user(
        tmp_path: Path, budget: int) -> None:
    """Reviewed with the former cap (REFUSED_IDS_CAP, 1,000,000 IDs, patched to 2 so that
    the first refused link filled it): Carol asked for nothing, and listing Dave's tablet
    excluded her phone event with no warning. There is no cap now: the shared devices stay
    in memory with the graph, or in its SQLite file once it spills (budget 4), so every
    refusal counts at any size."""
    with IdentityGraph("original", tmp_path, memory_budget_ids=budget) as graph:
        out = fates(graph, two_tablets(), ["dave-0001", "$device:tablet-1"])
        assert graph.report.refused_links == 2
        assert graph.report.spilled == (budget == 4)
        assert graph.report.shared_devices == 2
    assert out[5] == "skip"  # Dave's own event
    assert out[4] == "sent", out  # Carol's phone


def test_a_spilled_original_graph_knows_the_same_shared_devices(tmp_path: Path) -> None:
    """Regression guard: the spilled finish collects the same refused IDs (its name_of reads
    SQLite) and the exclusions match the in-memory graph's."""
    records = two_tablets() + [
        rec("Page", 500 + i, distinct_id=f"user-{i:04d}", **{"$user_id": f"user-{i:04d}",
                                                            "$device_id": f"dev-{i:04d}"})
        for i in range(40)]
    listed = ["dave-0001", "$device:tablet-1"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with IdentityGraph("original", tmp_path / "a") as graph:
        memory = fates(graph, records, listed)
        shared = [graph.shared_device(d) for d in ("tablet-0", "tablet-1", "phone-0")]
    with IdentityGraph("original", tmp_path / "b", memory_budget_ids=4) as graph:
        spilled = fates(graph, records, listed)
        assert graph.report.spilled
        assert [graph.shared_device(d) for d in ("tablet-0", "tablet-1", "phone-0")] == shared
    assert shared == [True, True, False]
    assert spilled == memory
    assert memory[:6] == ["sent", "sent", "sent", "skip", "sent", "skip"], memory


# --- a resumed run sends what a plain run sends ---------------------------------------------


class Crash(Exception):
    """Stands for kill -9 of migrate right after Amplitude accepted a batch."""


def run_config(folder: Path, work: Path, url: str) -> Any:
    from mp2amp.config import load_config

    return load_config(None, {
        "source.files": [str(folder / "events")], "amplitude.api_host": url,
        "amplitude.batch_max_bytes": 1024, "run.workdir": str(work),
        "mixpanel.timezone": "UTC", "mixpanel.id_merge": "original",
        "privacy.exclude_users": str(folder / "excluded.txt")},
        env={"AMPLITUDE_API_KEY": KEY})


def two_day_project(folder: Path) -> None:
    """The cookie tablet across two windows: Alice on day 1, Bob's refused $identify on
    day 2; Bob lists himself and the tablet as "$device:" + its cookie ID."""
    lines = cookie_tablet_lines()
    phone = {"$device_id": "phone-A-0001", "$user_id": "alice-001"}
    extra = [line("Page", 20 + i, f"a-more-{i}", distinct_id="alice-001", **phone)
             for i in range(4)]
    (folder / "events").mkdir()
    (folder / "events" / "2024-03-05.jsonl").write_text("\n".join(lines[:4] + extra) + "\n")
    later = [orjson.loads(x) for x in lines[4:] + extra[:2]]
    for r in later[-2:]:
        r["properties"]["$insert_id"] += "-day2"
    for r in later:
        r["properties"]["time"] += 86_400
    (folder / "events" / "2024-03-06.jsonl").write_text(
        "\n".join(orjson.dumps(r).decode() for r in later) + "\n")
    (folder / "excluded.txt").write_text(f"bob-0001\n$device:{TABLET}\n")


def test_a_resumed_run_excludes_and_sends_what_a_plain_run_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression guard: the refused IDs are not persisted, but the graph (and with it
    shared_device) is rebuilt from the staged windows on every run, so a run killed after
    its first accepted batch and resumed stores the same events as a plain run."""
    from mp2amp.ledger import Ledger
    from mp2amp.pipeline.migrate import migrate as run_migrate

    cli_workspace(monkeypatch, tmp_path, KEY)
    done = Ledger.batch_done

    def crash(self: Ledger, batch_id: str, **counts: Any) -> str:
        done(self, batch_id, **counts)
        raise Crash(batch_id)

    stored: list[list[tuple[Any, Any, Any]]] = []
    for name in ("plain", "resumed"):
        folder = tmp_path / name
        folder.mkdir()
        two_day_project(folder)
        with amplitude_emulator(tmp_path / f"amp-{name}", KEY) as url:
            config = run_config(folder, folder / "work", url)
            if name == "resumed":
                with monkeypatch.context() as patch:
                    patch.setattr(Ledger, "batch_done", crash)
                    with pytest.raises(Crash):
                        run_migrate(config)
                assert 0 < len(stored_ids(tmp_path / "amp-resumed")) < 7
                result = run_migrate(config, resume=True)
            else:
                result = run_migrate(config)
            assert result.exit_code == 0
        stored.append(stored_ids(tmp_path / f"amp-{name}"))
    assert stored[0] == stored[1]
    assert [i for i, _, _ in stored[0]] == ["a-more-0", "a-more-0-day2", "a-more-1",
                                            "a-more-1-day2", "a-more-2", "a-more-3",
                                            "a-phone"], stored[0]
