"""Session 22 review: remote inputs at the scale of a Data Pipelines export (hourly part
files under ``s3://bucket/<project>/<YYYY>/<MM>/<DD>/<HH>/`` with ``complete`` markers,
empty parts, ``mp_people_data/`` and ``mp_identity_mappings_data/`` beside them), globs
over such a tree, and a resume of such a run, against a moto S3 server of this module's
own whose requests are counted (method, path, query, Range).

The tests under "defects" were defects (now fixed): a glob stopped on a matched hour folder
holding only its marker, and a ``**`` glob listed and sniffed every folder of the tree again."""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.pipeline.migrate_kit import FAST, Crash, amplitude, make_config, stored_counts

from mp2amp.extract.files import expand_paths
from mp2amp.pipeline import windows as windows_mod
from mp2amp.pipeline.migrate import EXIT_OK, migrate

T = 1_700_000_000


class CountingS3:
    """A moto S3 server (server mode, real sockets) that logs every request it answers."""

    def __init__(self) -> None:
        from moto.server import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            ThreadedMotoServer,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        log: list[tuple[str, str, str, str | None]] = []
        self.log = log

        class Server(ThreadedMotoServer):
            def _server_entry(self) -> None:
                app = DomainDispatcherApplication(create_backend_app)

                def counting(environ: dict[str, Any], start_response: Any) -> Any:
                    log.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                                environ.get("QUERY_STRING", ""), environ.get("HTTP_RANGE")))
                    return app(environ, start_response)

                self._server = make_server(self._ip_address, self._port, counting, True,
                                           request_handler=MotoRequestHandler)
                self._server_ready_event.set()
                self._server.serve_forever()

        self.server = Server(ip_address="127.0.0.1", port=0, verbose=False)

    def kinds(self) -> collections.Counter[str]:
        out: collections.Counter[str] = collections.Counter()
        for method, _path, query, rng in self.log:
            if method == "GET" and "list-type" in query:
                out["LIST"] += 1
            elif method == "GET" and rng:
                out["GET-range"] += 1
            else:
                out[method] += 1
        return out


@pytest.fixture(scope="module")
def counted() -> Iterator[tuple[CountingS3, dict[str, Any]]]:
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    s3 = CountingS3()
    s3.server.start()
    host, port = s3.server.get_host_and_port()
    try:
        yield s3, {"endpoint_url": f"http://{host}:{port}", "key": "testing",
                   "secret": "testing", "client_kwargs": {"region_name": "us-east-1"}}
    finally:
        s3.server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def client(options: dict[str, Any]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def event(i: int, name: str = "E") -> bytes:
    return (json.dumps({"event": name, "properties": {
        "time": T + i * 60, "distinct_id": f"u{i}", "$insert_id": f"iid-{i}"}},
        separators=(",", ":")) + "\n").encode()


def hour_folder(i: int) -> str:
    day, hour = divmod(i, 24)
    return f"77/2024/{1 + day // 28:02d}/{1 + day % 28:02d}/{hour:02d}"


def part_key(i: int) -> str:
    return f"{hour_folder(i)}/part-{i}.export.json"


def pipeline_tree(n: int, *, odd: dict[int, str] | None = None) -> dict[str, bytes]:
    """A legacy raw pipeline's hourly slices: one part file and a ``complete`` marker per
    hour, an empty part now and then, profiles and identity mappings beside them."""
    odd = odd or {}
    objects: dict[str, bytes] = {}
    for i in range(n):
        name = odd.get(i, f"part-{i}.export.json")
        objects[f"{hour_folder(i)}/{name}"] = event(i)
        objects[f"{hour_folder(i)}/complete"] = b""
        if i % 50 == 3:
            objects[f"{hour_folder(i)}/part-empty-{i}.export.json"] = b""
    objects["77/mp_people_data/part-0.json"] = b'{"distinct_id":"u1","properties":{}}\n'
    objects["77/mp_identity_mappings_data/part-0.json"] = \
        b'{"distinct_id":"u1","resolved_distinct_id":"x"}\n'
    return objects


def put_all(options: dict[str, Any], bucket: str, objects: dict[str, bytes]) -> None:
    s3 = client(options)
    s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]),
                      objects.items()))


def run(files: str, tmp: Path, url: str, options: dict[str, Any], **kw: Any) -> Any:
    cfg = make_config(files, tmp / "work", url, **{"mixpanel.timezone": "UTC"})
    return migrate(cfg, upload_overrides=FAST, storage_options=options, **kw)


def users(url: str) -> collections.Counter[str]:
    return collections.Counter(key[0] for key, n in stored_counts(url).items() for _ in range(n))


# --- guards: a folder listed across 1,000-key pages, odd keys, a resume -------------------


def test_resume_after_a_crash_mid_staging_reads_each_pending_object_once(
        counted: tuple[CountingS3, dict[str, Any]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped after staging 15 of 41 windows (part-0..13 and hour 03's empty
    part); before the resume a staged object is
    rewritten (same size) and a new hour appears: the resume migrates the run's objects
    once each, names the new one and the changed one, and stages only what is pending."""
    s3, options = counted
    n = 40
    put_all(options, "r22-resume", pipeline_tree(n))
    original = windows_mod.staged_in_thread
    calls: list[int] = []

    async def crashing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 16:
            raise Crash("stopped while staging")
        return await original(*args, **kwargs)

    with amplitude(tmp_path / "amp") as url:
        monkeypatch.setattr(windows_mod, "staged_in_thread", crashing)
        with pytest.raises(Crash):
            run("s3://r22-resume/77/", tmp_path, url, options)
        monkeypatch.undo()
        s3c = client(options)
        s3c.put_object(Bucket="r22-resume", Key=part_key(1), Body=event(1, "F"))
        s3c.put_object(Bucket="r22-resume", Key=part_key(n + 3), Body=event(n + 3))
        s3.log.clear()
        result = run("s3://r22-resume/77/", tmp_path, url, options, resume=True)
        assert result.exit_code == EXIT_OK
        assert result.not_in_run == [f"s3://r22-resume/{part_key(n + 3)}"]
        assert result.changed_inputs == [f"s3://r22-resume/{part_key(1)}"]
        got = users(url)
        assert got == collections.Counter({f"u{i}": 1 for i in range(n)})
        # whole reads of objects (not the 8-byte sniffs): only the pending ones, once each
        reads = collections.Counter(path for method, path, _q, rng in s3.log
                                    if method == "GET" and rng and rng != "bytes=0-7")
        assert set(reads) == {f"/r22-resume/{part_key(i)}" for i in range(14, n)}
        assert max(reads.values()) == 1


# --- defects (fixed) ------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["77/**", "77/2024/01/01/*"])
def test_glob_over_a_tree_with_an_hour_without_events_migrates(
        counted: tuple[CountingS3, dict[str, Any]], tmp_path: Path, pattern: str) -> None:
    _, options = counted
    bucket = "r22-quiet-hour-" + ("all" if "**" in pattern else "day")
    objects = pipeline_tree(6)
    del objects[part_key(2)]  # hour 02 had no events: Mixpanel finished it all the same
    put_all(options, bucket, objects)
    with amplitude(tmp_path / "amp") as url:
        result = run(f"s3://{bucket}/{pattern}", tmp_path, url, options)
        assert result.exit_code == EXIT_OK
        assert users(url) == collections.Counter({f"u{i}": 1 for i in (0, 1, 3, 4, 5)})


def test_double_star_glob_costs_what_the_folder_costs(
        counted: tuple[CountingS3, dict[str, Any]]) -> None:
    s3, options = counted
    objects = pipeline_tree(96)  # four days of hourly slices
    put_all(options, "r22-star", objects)
    s3.log.clear()
    by_folder = expand_paths(["s3://r22-star/77/"], storage_options=options)
    folder_kinds = s3.kinds()
    s3.log.clear()
    by_glob = expand_paths(["s3://r22-star/77/**"], storage_options=options)
    glob_kinds = s3.kinds()
    assert sorted(f.url for f in by_glob) == sorted(f.url for f in by_folder)  # holds today
    sniffs = collections.Counter(path for method, path, _q, rng in s3.log
                                 if method == "GET" and rng)
    assert max(sniffs.values()) == 1, f"an object's first bytes read {max(sniffs.values())}x"
    assert glob_kinds["GET-range"] == folder_kinds["GET-range"]
    assert glob_kinds["LIST"] <= folder_kinds["LIST"] + 3, (glob_kinds, folder_kinds)


def test_a_glob_matching_only_folders_without_events_is_refused_naming_them(
        counted: tuple[CountingS3, dict[str, Any]], tmp_path: Path) -> None:
    """Passed over among others, but a glob that matches nothing else is refused (local
    and remote alike); a folder named outright without events is refused as before."""
    from mp2amp.errors import InputError

    _, options = counted
    put_all(options, "r22-only-quiet", {"77/2024/01/01/01/complete": b"",
                                        "77/2024/01/01/02/complete": b""})
    with pytest.raises(InputError) as remote:
        expand_paths(["s3://r22-only-quiet/77/2024/01/01/*"], storage_options=options)
    assert str(remote.value) == (
        "s3://r22-only-quiet/77/2024/01/01/* matches only folders without event files "
        "(s3://r22-only-quiet/77/2024/01/01/01, s3://r22-only-quiet/77/2024/01/01/02); "
        "check the pattern and run again")
    for hour in ("01", "02"):
        (tmp_path / "77" / hour).mkdir(parents=True)
        (tmp_path / "77" / hour / "complete").write_bytes(b"")
    with pytest.raises(InputError) as local:
        expand_paths([f"{tmp_path}/77/*"])
    assert str(local.value) == (
        f"{tmp_path}/77/* matches only folders without event files ({tmp_path}/77/01, "
        f"{tmp_path}/77/02); check the pattern and run again")
    with pytest.raises(InputError, match="contains no event files"):
        expand_paths([f"{tmp_path}/77/01"])
    (tmp_path / "77" / "03").mkdir()
    (tmp_path / "77" / "03" / "part-0.json").write_bytes(b"")
    assert [f.url for f in expand_paths([f"{tmp_path}/77/*"])] == [f"{tmp_path}/77/03/part-0.json"]
