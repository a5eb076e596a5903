"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Helpers shared by test files in several folders (shared_kit.py): importable by name, as
# --import-mode=importlib puts no test folder on the path
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, Any]]:
    """A moto S3 server on 127.0.0.1 (real sockets, not mocks) and the fsspec storage
    options that reach it; fake AWS credentials in the environment while it runs."""
    from moto.server import ThreadedMotoServer

    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing",
               "client_kwargs": {"region_name": "us-east-1"}}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[dict[str, Any]]:
    """A GCS server (gcp-storage-emulator, in memory) on 127.0.0.1 (real sockets, not
    mocks) and the fsspec storage options that reach it: anonymous, as it checks none."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    # port 0: each xdist worker gets its own free port; the emulator does not say which
    host, port = server._api._httpd.server_address[:2]
    try:
        yield {"endpoint_url": f"http://{host}:{port}", "token": "anon"}
    finally:
        server.stop()
