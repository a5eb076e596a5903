"""Helpers shared by test files in several folders (importable as ``shared_kit``: pytest puts
``tests/`` on the path for its conftest). Not a test module: it defines no tests."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator

# The environment variables mp2amp reads secrets from: a test starts without any of them
SECRET_ENV = ("AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY", "MIXPANEL_SERVICE_ACCOUNT",
              "MIXPANEL_SECRET", "MP2AMP_HASH_SALT")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def clean_env(monkeypatch: pytest.MonkeyPatch, amplitude_key: str | None = None) -> None:
    """No secret from the machine's environment; ``amplitude_key`` as AMPLITUDE_API_KEY."""
    for var in SECRET_ENV:
        monkeypatch.delenv(var, raising=False)
    if amplitude_key is not None:
        monkeypatch.setenv("AMPLITUDE_API_KEY", amplitude_key)


def cli_workspace(monkeypatch: pytest.MonkeyPatch, folder: Path, amplitude_key: str,
                  events: str | None = None) -> Path:
    """``folder`` as the command's current folder, with a secret-free environment (but
    ``amplitude_key``) and, given ``events``, ``events/2024-03-01.jsonl`` holding them."""
    clean_env(monkeypatch, amplitude_key)
    monkeypatch.chdir(folder)
    if events is not None:
        (folder / "events").mkdir()
        (folder / "events" / "2024-03-01.jsonl").write_text(events)
    return folder


@contextmanager
def amplitude_emulator(data_dir: Path, api_key: str) -> Iterator[str]:
    """An in-process Amplitude emulator on a free loopback port; yields its URL."""
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=data_dir, api_key=api_key))
    with emu.running() as url:
        yield url


@asynccontextmanager
async def serve_routes(routes: dict[tuple[str, str], Handler]) -> AsyncIterator[str]:
    """Serve ``{(method, path): handler}`` on a free loopback port; yields the base URL."""
    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A loopback port free now (an emulator restarted on it keeps its URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stored_by_source_id(url: str) -> dict[str, int]:
    """The Amplitude emulator's insert_ids as the Mixpanel records had them (Amplitude's
    are those with a digest appended) -> times stored."""
    with urllib.request.urlopen(url + "/_emulator/insert_ids", timeout=30) as resp:
        rows = orjson.loads(resp.read())
    out: dict[str, int] = {}
    for _, iid, n in rows:
        source_id = iid.rsplit("-", 1)[0]
        out[source_id] = out.get(source_id, 0) + n
    return out


def ledger_meta(ledger: Path) -> dict[str, str]:
    """A ledger's meta table, read straight from its SQLite file."""
    with sqlite3.connect(ledger) as db:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())


def stop_at_second_staging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run is stopped (Ctrl-C) as it starts staging its second window."""
    from mp2amp.pipeline import windows as windows_module

    original = windows_module.staged_in_thread
    calls: list[int] = []

    async def stop(records: Any, dest: Path, local: Any) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return await original(records, dest, local)

    monkeypatch.setattr(windows_module, "staged_in_thread", stop)


ScriptedAnswer = Callable[[list[dict[str, Any]]], tuple[int, dict[str, Any]]]


@contextmanager
def scripted_amplitude(answer: ScriptedAnswer) -> Iterator[tuple[str, list[list[dict[str, Any]]]]]:
    """An Amplitude that answers ``answer(events)`` to each request (status, JSON body);
    yields its URL and the events of every request it was sent (gzip bodies read too)."""
    import gzip
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[list[dict[str, Any]]] = []

    class Scripted(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            events = orjson.loads(raw)["events"]
            seen.append(events)
            status, body = answer(events)
            data = orjson.dumps(body)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the run stopped (a test's crash) before reading the answer
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def dead_letter_rows(workdir: Path) -> list[dict[str, Any]]:
    """The rows of ``workdir/dead-letters.jsonl`` (none when it is not there)."""
    path = workdir / "dead-letters.jsonl"
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def accept_all(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """A ``scripted_amplitude`` answer: Amplitude's 200 for every request."""
    return 200, {"code": 200, "events_ingested": len(events), "payload_size_bytes": 10,
                 "server_upload_time": 1700000000000}


def files_config(files: list[Path], workdir: Path, url: str, *, api_key: str) -> Any:
    """A migration of ``files`` (UTC project) to the Amplitude at ``url``."""
    from mp2amp.config import load_config

    return load_config(None, {"source.files": [str(f) for f in files],
                              "amplitude.api_host": url, "run.workdir": str(workdir),
                              "mixpanel.timezone": "UTC"},
                       env={"AMPLITUDE_API_KEY": api_key})


def page_view(n: int, **props: Any) -> dict[str, Any]:
    """A Mixpanel "Page View" record of user/device ``n`` at 1700000000 + n seconds."""
    base = {"time": 1700000000 + n, "distinct_id": f"user-{n:04d}",
            "$insert_id": f"ins-{n:06d}", "$device_id": f"device-{n:04d}"}
    return {"event": "Page View", "properties": {**base, **props}}


def subprocess_env(*hooks: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``mp2amp`` subprocess: no secrets of this one, the package
    from ``src/`` and ``hooks`` (folders holding a test-side ``sitecustomize.py``) first on
    its path, and ``extra`` variables."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(src), *map(str, hooks), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def file_tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a file's hash, a symlink's target, a folder's mark."""
    tree = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            tree[key] = "-> " + os.readlink(path)
        elif path.is_dir():
            tree[key] = "dir"
        else:
            tree[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tree
