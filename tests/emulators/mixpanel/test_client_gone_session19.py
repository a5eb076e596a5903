"""A client that leaves an export mid-stream (a migration stopped by Ctrl-C, say): the
Mixpanel emulator counts it and logs no aiohttp traceback, as the Amplitude one does."""

from __future__ import annotations

import base64
import logging
import socket
import struct
import time
from pathlib import Path
from typing import Any

import requests


def test_an_export_client_gone_mid_stream_is_counted_without_a_traceback(
        kit: Any, tmp_path: Path, serve: Any, caplog: Any) -> None:
    day = "2024-03-01"
    rows = [kit.ev("Page", 1_709_280_000 + i, f"u{i % 50}", note="x" * 200)
            for i in range(3000)]
    root = kit.build_project(tmp_path / "p", events={day: rows})
    auth = base64.b64encode(f"{kit.SA_USER}:{kit.SA_SECRET}".encode()).decode()
    with caplog.at_level(logging.ERROR), serve(root, chunk_delay=0.05) as (url, _emulator):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(f"GET /api/2.0/export?from_date={day}&to_date={day}&project_id="
                         f"{kit.PROJECT_ID} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}"
                         "\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # the stream has begun
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        deadline = time.monotonic() + 15
        gone = 0
        while time.monotonic() < deadline:
            gone = requests.get(url + "/_emulator/stats", timeout=10).json()[
                "requests"].get("export_client_gone", 0)
            if gone:
                break
            time.sleep(0.05)
        assert gone == 1
    assert not [r for r in caplog.records if "Error handling request" in r.getMessage()], \
        [r.getMessage() for r in caplog.records]
