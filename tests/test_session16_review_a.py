"""Session 16 review A: features used together, end to end through ``mp2amp migrate``.

Each test migrates a small hand-written Mixpanel export through the CLI (``CliRunner``)
into the in-process Amplitude emulator over loopback, or into S3-import files, and reads
back what Amplitude would hold. Tests marked ``xfail(strict=True, reason=...)`` show a
defect: they pass once it is fixed.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.emulators.amplitude.store import EventStore
from shared_kit import amplitude_emulator, cli_workspace

KEY = "review16a-key"
T0 = 1_709_600_000  # 2024-03-05 00:53:20 UTC


def record(event: str, distinct_id: str, t: float, insert_id: str, **props: Any) -> str:
    body = {"time": t, "distinct_id": distinct_id, "$insert_id": insert_id, "mp_lib": "web",
            "$device_id": f"device-{distinct_id}-0001", **props}
    return orjson.dumps({"event": event, "properties": body}).decode()


def migrate(folder: Path, config: str) -> Any:
    (folder / "mp2amp.toml").write_text(config)
    result = CliRunner().invoke(app, ["migrate", "-c", str(folder / "mp2amp.toml"), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr or result.output
    return orjson.loads(result.stdout)


def stored(data: Path) -> list[dict[str, Any]]:
    return list(EventStore(data).iter_events())


@pytest.fixture
def amp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """The command's folder (an ``events/`` folder is written by each test) and the URL of
    an Amplitude emulator holding its data in ``tmp_path / "amp"``."""
    folder = tmp_path / "project"
    folder.mkdir()
    cli_workspace(monkeypatch, folder, KEY)
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        yield folder, url


def write_events(folder: Path, lines: list[str]) -> None:
    (folder / "events").mkdir(exist_ok=True)
    (folder / "events" / "2024-03-05.jsonl").write_text("\n".join(lines) + "\n")


# --- privacy hashing x groups ------------------------------------------------------------


def test_a_hashed_group_key_is_one_group_whether_sent_as_text_or_as_a_list(
        amp: tuple[Path, str], tmp_path: Path) -> None:
    folder, url = amp
    # the generator (and Mixpanel's SDKs: set_group registers a list) sends both shapes
    write_events(folder, [
        record("Invite Sent", "alice", T0, "i1", company_id="c_00001"),
        record("Page Viewed", "alice", T0 + 5, "i2", company_id=["c_00001"]),
        record("Page Viewed", "bob", T0 + 9, "i3", company_id=["c_00001", "c_00002"]),
    ])
    migrate(folder, f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{url}"\n'
                    '[transform]\ngroups = ["company_id"]\n'
                    '[privacy]\nhash_properties = ["company_id"]\nhash_salt = "pepper"\n')
    names: dict[str, set[str]] = {}
    for event in stored(tmp_path / "amp"):
        value = event["groups"]["company_id"]
        names[event["insert_id"].split("-")[0]] = set(value if isinstance(value, list)
                                                       else [value])
    assert len(names) == 3
    # one company, one group name: the hash of "c_00001" whichever way it was sent
    assert names["i1"] == names["i2"], names
    assert names["i2"] < names["i3"] and len(names["i3"]) == 2, names


# --- tracking plan renames x revenue and groups ------------------------------------------


def test_revenue_and_groups_named_as_in_mixpanel_survive_a_plan_rename(
        amp: tuple[Path, str], tmp_path: Path) -> None:
    folder, url = amp
    (folder / "plan.yaml").write_text(
        "version: 1\nproperties:\n  price:\n    rename: Price\n"
        "  company_id:\n    rename: Company\n")
    write_events(folder, [record("Purchase", "alice", T0, "p1", price=19.5, quantity=2,
                                 currency="usd", company_id="c_00001")])
    migrate(folder, f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{url}"\n'
                    '[transform]\nplan = "plan.yaml"\ngroups = ["company_id"]\n'
                    '[transform.revenue]\nprice = "price"\nquantity = "quantity"\n'
                    'currency = "currency"\n')
    [event] = stored(tmp_path / "amp")
    assert event["event_properties"]["Price"] == 19.5  # the plan's rename happened
    assert (event.get("price"), event.get("quantity"), event.get("currency")) == (19.5, 2, "USD")
    assert event.get("groups") == {"company_id": "c_00001"}


# --- privacy exclusions x identity settings ----------------------------------------------


def test_an_excluded_users_anonymous_events_are_skipped_whatever_retroactive_says(
        amp: tuple[Path, str], tmp_path: Path) -> None:
    folder, url = amp
    device = "3f2a9c1e-1111-4c4c-8888-0123456789ab"
    write_events(folder, [
        record("Page Viewed", device, T0, "a1", **{"$device_id": device}),
        record("Signed Up", "alice-001", T0 + 10, "a2",
               **{"$device_id": device, "$user_id": "alice-001"}),
        record("Page Viewed", "alice-001", T0 + 20, "a3",
               **{"$device_id": device, "$user_id": "alice-001"}),
        record("Page Viewed", "bob-0001", T0 + 30, "b1"),
    ])
    (folder / "excluded.txt").write_text("alice-001\n")
    result = migrate(folder, f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{url}"\n'
                             '[transform]\nretroactive = false\n'
                             '[privacy]\nexclude_users = "excluded.txt"\n')
    sent = sorted(e["insert_id"].split("-")[0] for e in stored(tmp_path / "amp"))
    # with retroactive = true the same run sends only b1: alice's device is alice's
    assert sent == ["b1"], result["totals"]


# --- the S3-import sink and the Batch API deliver the same events ------------------------


def test_import_files_and_the_batch_api_carry_the_same_events_under_every_rule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A generated legacy-time project (DST day, original ID merge, dirty data) under a
    plan, revenue, groups and privacy rules: the import files hold exactly the events the
    Batch API stored, field for field (insert_ids, UTC times, sessions, properties)."""
    folder = tmp_path / "project"
    folder.mkdir()
    cli_workspace(monkeypatch, folder, KEY)
    subprocess.run([sys.executable, "-m", "mp2amp", "generate", "--out", str(folder / "p"),
                    "--users", "20", "--days", "2", "--seed", "5", "--start", "2024-03-09",
                    "--timezone", "America/Los_Angeles", "--legacy-time", "--id-merge",
                    "original", "--dirty", "0.02"], check=True, capture_output=True, timeout=60)
    (folder / "plan.yaml").write_text(
        "version: 1\nproperties:\n  plan:\n    user_property: true\n"
        "  product_name:\n    rename: Product Name\n"
        "events:\n  $mp_web_page_view:\n    rename: Page Viewed\n")
    (folder / "excluded.txt").write_text("u_c677330bdb\n")
    rules = ('[mixpanel]\ntimezone = "America/Los_Angeles"\nlegacy_time = true\n'
             'id_merge = "original"\n[source]\nfiles = ["p/events"]\n'
             '[transform]\nplan = "plan.yaml"\ngroups = ["company_id"]\n'
             '[transform.revenue]\nprice = "price"\nquantity = "quantity"\n'
             'product_id = "product_id"\ncurrency = "currency"\nrevenue = "amount"\n'
             '[privacy]\nip = "drop"\ndrop_properties = ["$city"]\n'
             'hash_properties = ["product_id"]\nhash_salt = "pepper"\n'
             'exclude_users = "excluded.txt"\ndrop_before = 2024-03-10\n')
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        migrate(folder, rules + f'[amplitude]\napi_host = "{url}"\n'
                                f'[run]\nworkdir = "{tmp_path / "w-api"}"\n')
    migrate(folder, rules + f'[amplitude]\noutput_dir = "{tmp_path / "import"}"\n'
                            f'[run]\nworkdir = "{tmp_path / "w-files"}"\n')
    api = {e["insert_id"]: {k: v for k, v in e.items() if not k.startswith("_")}
           for e in stored(tmp_path / "amp")}
    files = {}
    for path in sorted((tmp_path / "import").glob("*.json.gz")):
        for line in gzip.decompress(path.read_bytes()).splitlines():
            event = orjson.loads(line)
            files[event["insert_id"]] = event
    assert len(api) > 100
    assert api.keys() == files.keys()
    differ = [k for k in api if api[k] != files[k]]
    assert not differ, (api[differ[0]], files[differ[0]])


# --- the fixes' other cases, through the transform alone --------------------------------


def _transform(record: dict[str, Any], ids: Any, **settings: Any) -> Any:
    from mp2amp.transform import Transformer, TransformSettings

    transformer = Transformer(TransformSettings(**settings))
    return transformer.event(record, ids), transformer.stats()["other"]


def test_an_overlong_user_id_leaves_the_event_to_its_device_and_is_counted() -> None:
    from mp2amp.errors import Rejection
    from mp2amp.models import Resolved

    record = {"event": "E", "properties": {"time": T0, "distinct_id": "u" * 1500}}
    out, other = _transform(record, Resolved("u" * 1500, "device-0001"))
    assert out["device_id"] == "device-0001" and "user_id" not in out
    assert other == {"user_id_over_limit": 1}
    both, _ = _transform(record, Resolved("u" * 1500, "d" * 1025))
    assert isinstance(both, Rejection) and (both.reason, both.field) == ("invalid_id", "user_id")


def test_a_hashed_list_is_hashed_value_by_value_and_an_object_whole() -> None:
    from mp2amp.models import Resolved
    from mp2amp.transform.privacy import PrivacyRules

    rules = PrivacyRules(hash_properties=["who"], drop_properties=["ssn"], salt="pepper")
    h = rules.hash_value
    out = rules.apply("E", {"who": ["x", None, 7]}, Resolved("u", None), 0)
    assert isinstance(out, dict) and out["who"] == [h("x"), None, h(7)]
    # an object is hashed whole (its keys are as personal as its values), dropped keys
    # removed first (session-16 second review)
    out = rules.apply("E", {"who": {"email": "a@b.c", "ids": ["x", None, 7], "ssn": "1"}},
                      Resolved("u", None), 0)
    assert isinstance(out, dict)
    assert out["who"] == h({"email": "a@b.c", "ids": ["x", None, 7]})
    assert h(7) == h("7")  # a number and its text join, as before


def test_configured_properties_the_plan_moves_or_drops_are_still_read() -> None:
    from mp2amp.models import Resolved
    from mp2amp.transform.plan import parse_plan
    from mp2amp.transform.settings import RevenueSettings

    plan = parse_plan({"properties": {"company_id": {"user_property": True},
                                      "amount": {"drop": True},
                                      "cost": {"rename": "Cost"}}})
    record = {"event": "Paid", "properties": {"time": T0, "distinct_id": "alice",
                                              "company_id": "c_1", "amount": 9.5, "cost": 3}}
    out, _ = _transform(record, Resolved("alice", None), plan=plan, group_keys=("company_id",),
                        revenue=RevenueSettings(revenue="amount"))
    assert out["groups"] == {"company_id": "c_1"} and out["revenue"] == 9.5
    assert out["user_properties"] == {"company_id": "c_1"}
    assert "amount" not in out["event_properties"]
    # a config naming the plan's new name (as older versions needed) still works
    out, _ = _transform(record, Resolved("alice", None), plan=plan,
                        revenue=RevenueSettings(price="Cost"))
    assert out["price"] == 3 and out["event_properties"]["Cost"] == 3


def test_a_problem_inside_a_list_property_is_named_by_its_mixpanel_path() -> None:
    from mp2amp.transform.problems import source_field

    record = {"properties": {"arr": [1, 2], "$browser": ["x"]}}
    assert source_field("event_properties.arr[1]", record) == "properties.arr[1]"
    assert source_field("event_properties.browser[0]", record) == "properties.$browser[0]"
