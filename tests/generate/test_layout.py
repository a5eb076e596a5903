"""The on-disk layout is docs/contracts.md §1, and a seed reproduces every byte."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from generate_kit import Project, build, read_lines, tree_difference

CONTRACT_DIRT = {"duplicates", "malformed_lines", "split_lines", "junk_ids", "short_ids",
                 "long_strings", "deep_nesting", "type_changes", "hotshard", "medium_strings",
                 "reused_insert_ids"}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    first = _digests(build(tmp_path / "a", users=60, days=2, seed=5, dirty=0.05).root)
    second = _digests(build(tmp_path / "b", users=60, days=2, seed=5, dirty=0.05).root)
    other = _digests(build(tmp_path / "c", users=60, days=2, seed=6, dirty=0.05).root)
    assert first == second, tree_difference(tmp_path / "a", tmp_path / "b")
    assert first["events/2024-01-01.jsonl.gz"] != other["events/2024-01-01.jsonl.gz"]


def test_no_gzip_writes_the_same_records_uncompressed(tmp_path: Path) -> None:
    packed = build(tmp_path / "gz", users=40, days=2, seed=8, dirty=0.05)
    plain = build(tmp_path / "plain", users=40, days=2, seed=8, dirty=0.05, gzip=False)
    for day in ("2024-01-01", "2024-01-02"):
        raw = (plain.root / f"events/{day}.jsonl").read_bytes()
        assert raw and raw == gzip.decompress((packed.root / f"events/{day}.jsonl.gz").read_bytes())
    assert not list((plain.root / "events").glob("*.gz"))
    assert plain.truth_rows() == [
        [r[0].replace(".jsonl.gz:", ".jsonl:"), *r[1:]] for r in packed.truth_rows()
    ]


def test_layout_matches_the_contract(simplified: Project) -> None:
    root = simplified.root
    expected = {"project.json", "schema.json", "events/2024-01-01.jsonl.gz", "events/2024-01-02.jsonl.gz",
                "events/2024-01-03.jsonl.gz", "profiles/users.jsonl.gz",
                "profiles/groups/company_id.jsonl.gz", "identity/mappings.jsonl.gz",
                "truth/summary.json", "truth/event_person.tsv.gz", "truth/daily_counts.json",
                "truth/metrics.json"}
    assert {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} == expected
    project = simplified.json("project.json")
    assert set(project) == {"project_id", "timezone", "legacy_time", "id_merge", "start", "days", "seed",
                            "users", "industries", "dirty", "group_keys", "events_written"}
    assert project["timezone"] == "America/Los_Angeles" and project["id_merge"] == "simplified"
    assert project["start"] == "2024-01-01" and project["days"] == 3 and project["users"] == 200
    assert project["group_keys"] == ["company_id"]
    assert project["industries"] == ["ecommerce", "b2b", "fintech", "streaming"]
    summary = simplified.json("truth/summary.json")
    assert project["events_written"] == summary["records_written"] == simplified.result.records_written
    assert set(summary["dirt"]) == CONTRACT_DIRT
    records = list(read_lines(root))
    assert summary["records_written"] == len(records)
    assert summary["lines_written"] == sum(2 if r.kind == "split" else 1 for r in records)
    for line in records:
        if line.record is not None:
            assert set(line.record) == {"event", "properties"}
            assert isinstance(line.record["properties"]["time"], int | float)


def test_records_look_like_the_sdks_made_them(simplified: Project) -> None:
    libs: dict[str, dict[str, object]] = {}
    for line in read_lines(simplified.root):
        if line.record is not None:
            props = line.record["properties"]
            libs.setdefault(props.get("mp_lib", "?"), props)
    assert {"web", "swift", "android", "python"} <= set(libs)
    web, ios, android, server = libs["web"], libs["swift"], libs["android"], libs["python"]
    assert isinstance(web["time"], float) and isinstance(web["$browser_version"], int | float)
    assert {"$browser", "$current_url", "$os", "$screen_width", "mp_country_code", "$city", "$region"} <= set(web)
    assert isinstance(ios["time"], int) and ios["$manufacturer"] == "Apple"
    assert isinstance(ios["$app_build_number"], str)
    assert {"$app_release", "$app_version", "$brand", "$screen_dpi", "$os_version"} <= set(android)
    assert server["$import"] is True and "$device_id" not in server and "$city" not in server


def test_insert_ids_are_unique_sdk_shaped_and_a_few_are_missing(simplified: Project) -> None:
    """Unique but on exact copies and the dirt's reused ones (counted in the summary)."""
    seen: dict[str, bytes] = {}
    missing = 0
    total = 0
    reused = 0
    for line in read_lines(simplified.root):
        if line.record is None:
            continue
        total += 1
        iid = line.record["properties"].get("$insert_id")
        if iid is None:
            missing += 1
            continue
        assert 16 <= len(iid) <= 36
        reused += seen.setdefault(iid, line.raw) != line.raw
    assert 0 < missing < total * 0.05
    summary = simplified.json("truth/summary.json")
    assert reused == summary["dirt"]["reused_insert_ids"]
    assert summary["events_by_kind"]["no_insert_id"] >= missing - summary["dirt"]["duplicates"]


def test_small_files_are_written_with_zlib_so_their_bytes_are_stable(tmp_path: Path) -> None:
    # ISA-L's level-1 stream gave other bytes for the same records now and then
    # (profiles/users.jsonl.gz, identity/mappings.jsonl.gz in full test runs)
    import zlib

    project = build(tmp_path / "p", users=30, days=1, seed=2)
    for rel in ("profiles/users.jsonl.gz", "identity/mappings.jsonl.gz"):
        data = (project.root / rel).read_bytes()
        z = zlib.compressobj(1, zlib.DEFLATED, 31)
        assert data == z.compress(gzip.decompress(data)) + z.flush(), rel
