"""The spliced JSON of the hot path is exactly what orjson writes for the dict path."""

from __future__ import annotations

from pathlib import Path
from random import Random
from zoneinfo import ZoneInfo

import orjson
import pytest
from generate_kit import Project, read_lines

from mp2amp.generate import industries as ind
from mp2amp.generate.dirt import Dirt
from mp2amp.generate.industries import FUNNELS, INDUSTRIES
from mp2amp.generate.people import plan_people
from mp2amp.generate.planner import DayPlanner
from mp2amp.generate.platforms import WEB
from mp2amp.generate.schema import SchemaSampler
from mp2amp.generate.sessions import Emitter
from mp2amp.generate.truth import Truth
from mp2amp.generate.writer import GzipLines


def test_every_clean_line_is_canonical_orjson(simplified: Project, original: Project) -> None:
    # a duplicate key, a float or string written differently from orjson: the round trip differs
    checked = 0
    for project in (simplified, original):
        for line in read_lines(project.root):
            if line.kind == "ok" and line.record is not None:
                assert orjson.dumps(line.record) == line.raw
                checked += 1
    assert checked > 1000


@pytest.mark.parametrize("id_merge", ["simplified", "original"])
def test_templates_splice_to_the_dict_path_bytes(tmp_path: Path, id_merge: str) -> None:
    rng = Random(5)
    people = plan_people(rng, 300, 5, INDUSTRIES, id_merge, 0.1)
    emitter = Emitter(rng, id_merge, False, ZoneInfo("UTC"), Dirt(0.0), Truth(tmp_path, dict(FUNNELS), 0),
                      SchemaSampler())
    planner = DayPlanner(emitter, people, id_merge)
    extras = [None, {}, ind.PRODUCTS[3], ind.WEB_VIEWS["Cart Viewed"], ind.SCREENS["Cart Viewed"],
              {"plan": "pro", "trial_days": 14}, {"currency": "EUR", "amount": 12.5, "note": "Zürich"}]
    kinds = set()
    for person in people:
        for use in person.uses:
            owner = people[use.device.owner] if use.device.owner is not None else person
            for known in (False, True):
                tpl = planner._template(person, use, owner, known)
                props = tpl.props()
                web = use.device.platform == WEB
                assert tpl.url_slot == web
                url = "https://app.example.com/cart"
                spliced = (b'{"time":0' + tpl.head + (orjson.dumps(url) if web else b"") + tpl.tail + b"}")
                expected = dict(props, **({"$current_url": url} if web else {}))
                assert spliced == orjson.dumps(expected)
                kinds.add((use.device.platform, known, bool(person.company_id)))
                for extra in extras:
                    if not extra:
                        own_url, more = None, b""
                    else:
                        table = emitter.tables.web if web else emitter.tables.app
                        piece = table.get(id(extra)) or emitter.tables.piece(extra, web)
                        if piece is None:  # may override a default: must take the dict path
                            assert not emitter.tables.defaults.isdisjoint(extra)
                            continue
                        own_url, more = piece
                    full = dict(expected, **(extra or {}))
                    page = orjson.dumps(full["$current_url"]) if web else b""
                    assert own_url in (None, b"", page)
                    assert b'{"time":0' + tpl.head + page + tpl.tail + more + b"}" == orjson.dumps(full)
    assert len(kinds) >= 8  # web and apps, anonymous and identified, with and without a company


def test_a_name_first_seen_on_the_dict_path_splices_later(tmp_path: Path) -> None:
    # the splice path indexes per-name pieces filled when a name is first sampled; a name
    # sampled enough through emit() (server-side events) must still splice afterwards
    rng = Random(3)
    people = plan_people(rng, 50, 2, INDUSTRIES, "simplified", 0.0)
    truth = Truth(tmp_path / "truth", dict(FUNNELS), 0)
    emitter = Emitter(rng, "simplified", False, ZoneInfo("UTC"), Dirt(0.0), truth, SchemaSampler())
    planner = DayPlanner(emitter, people, "simplified")
    person = next(p for p in people if p.user_id is not None)
    use = person.uses[0]
    owner = people[use.device.owner] if use.device.owner is not None else person
    name = "Backend Only Then Spliced"
    with GzipLines(tmp_path / "events.jsonl", compress=False) as out:
        emitter.start_day(out, "events.jsonl", 0, 86_400_000)
        for _ in range(4):
            emitter.emit(name, {"time": 0, "distinct_id": person.user_id}, {"n": 1}, 1000, person.user_id, "",
                         "server")
        assert name in emitter.schema.done
        emitter.run(2000, 86_400_000, [(name, None, 0.0)], planner._template(person, use, owner, True))
    truth.close()
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert len(lines) == 5
    assert orjson.loads(lines[-1])["event"] == name
