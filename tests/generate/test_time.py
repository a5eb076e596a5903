"""Time: seconds (float with ms on web), one file per project-timezone day, and
``--legacy-time`` exports project-local epoch with the DST offset of each instant."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from generate_kit import Project, build, read_lines

LA = ZoneInfo("America/Los_Angeles")
HOUR_MS = 3_600_000


def _web_offsets(project: Project) -> dict[str, set[int]]:
    """Per day file, the offsets (hours) between exported ``time`` and the real instant."""
    found: dict[str, set[int]] = {}
    for line in read_lines(project.root):
        if line.record is None:
            continue
        props = line.record["properties"]
        if props.get("mp_lib") != "web" or line.record["event"] == "$identify":
            continue
        # web events reach Mixpanel 0.12-2.12 s after they happen
        diff = props["time"] * 1000 - props["mp_processing_time_ms"]
        found.setdefault(line.file, set()).add(round((diff + 1120) / HOUR_MS))
    return found


def test_events_sit_in_the_file_of_their_project_timezone_day(simplified: Project) -> None:
    for line in read_lines(simplified.root):
        if line.record is not None:
            local = datetime.fromtimestamp(line.record["properties"]["time"], tz=UTC).astimezone(LA)
            assert line.file == f"events/{local.date().isoformat()}.jsonl.gz"
    assert _web_offsets(simplified) == {f"events/2024-01-0{d}.jsonl.gz": {0} for d in (1, 2, 3)}


def test_legacy_time_is_project_local_epoch(original: Project) -> None:
    assert original.json("project.json")["legacy_time"] is True
    for line in read_lines(original.root):
        if line.record is not None:
            # project-local epoch read as if it were UTC gives the local wall-clock date
            local = datetime.fromtimestamp(int(line.record["properties"]["time"]), tz=UTC)
            assert line.file == f"events/{local.date().isoformat()}.jsonl.gz"
    assert set().union(*_web_offsets(original).values()) == {-8}


def test_legacy_time_follows_daylight_saving(tmp_path: Path) -> None:
    project = build(tmp_path / "dst", users=120, days=3, seed=4, start=date(2024, 3, 9),
                    legacy_time=True)
    assert _web_offsets(project) == {
        "events/2024-03-09.jsonl.gz": {-8},   # PST
        "events/2024-03-10.jsonl.gz": {-7},   # sessions start after 07:00, PDT since 02:00
        "events/2024-03-11.jsonl.gz": {-7},
    }
    web_float = [line.record["properties"]["time"] for line in read_lines(project.root)
                 if line.record and line.record["properties"].get("mp_lib") == "web"]
    assert any(isinstance(t, float) and t != int(t) for t in web_float)
