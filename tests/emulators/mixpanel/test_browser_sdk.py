"""The official npm ``mixpanel-browser`` SDK, in headless Chromium, lands its track, people
and group calls on the emulator: cross-origin with credentials, as from a customer's site.

The page is served from another loopback port than the emulator (another origin), loads the
SDK's own UMD build from ``tests/js/node_modules`` (``make test-deps`` installs it, and Debian's
``chromium``), and calls the SDK the way a site does. The test reads back what the emulator
stored (each ``$insert_id`` once), and what the SDK made of the emulator's answers, which
the page reports: an SDK that cannot read them (CORS refusing a request with credentials)
answers its calls 0 and reports "Bad HTTP status: 0", even where its batcher drops the
batch as if it had been answered.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mp2amp.emulators.mixpanel import read_received

TOKEN = "tok-123"
ROOT = Path(__file__).resolve().parents[3]
SDK = ROOT / "tests" / "js" / "node_modules" / "mixpanel-browser" / "dist" / "mixpanel.umd.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_MISSING = [what for what, there in (("chromium", CHROMIUM), (str(SDK), SDK.exists())) if not there]
if _MISSING and os.environ.get("CI"):  # CI runs `make test`, which installs both
    raise RuntimeError(f"missing {', '.join(_MISSING)}: `make test-deps` should have installed it")
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"needs {', '.join(_MISSING)} "
                                "(`make test-deps` installs them)")

PAGE = """<!doctype html><html><head><title>shop</title>
<script src="/mixpanel.umd.js"></script></head><body><script>
var answers = [], errors = [];
function answered(response) { answers.push(response); }
mixpanel.init("%(token)s", {api_host: "%(api)s", batch_requests: %(batch)s,
                            batch_flush_interval_ms: 200, track_pageview: false,
                            persistence: "localStorage",
                            error_reporter: function (msg) { errors.push(String(msg)); }});
mixpanel.register({plan: "pro"});
mixpanel.track("Signed Up", {price: 9.5, items: ["a", "b"]}, answered);
mixpanel.identify("user-42");
mixpanel.people.set({"$email": "user42@example.com", plan: "pro"}, answered);
mixpanel.set_group("company_id", "acme");
mixpanel.get_group("company_id", "acme").set({name: "Acme"}, answered);
mixpanel.track("Order Completed", {amount: 12.5}, answered);
// What the SDK made of the emulator's answers, reported to this page's own server once
// every call was answered and no batch is queued (or after 30 s): the answers, the errors
// it reported (a batch whose answer it could not read is one: "Bad HTTP status: 0"), and
// the batch queues it keeps until a request is answered.
var started = Date.now();
function queues() {  // the batch queues ("__mpq_<token>_ev" ...), not their locks
  var found = {};
  for (var i = 0; i < localStorage.length; i++) {
    var key = localStorage.key(i), value;
    if (key.indexOf("__mpq_") !== 0) { continue; }
    try { value = JSON.parse(localStorage.getItem(key)); } catch (e) { continue; }
    if (Array.isArray(value)) { found[key] = value; }
  }
  return found;
}
function settled(found) {
  for (var key in found) { if (found[key].length) { return false; } }
  return answers.length >= 4;
}
(function report() {
  var found = queues();
  if (!settled(found) && Date.now() - started < 30000) { setTimeout(report, 200); return; }
  fetch("/report", {method: "POST",
                    body: JSON.stringify({answers: answers, errors: errors, queues: found})});
})();
</script></body></html>"""


@contextmanager
def _site(page: str, reports: list[dict[str, Any]]) -> Iterator[str]:
    """The customer's site: the page and the SDK file, on a port of its own; what the page
    reports is appended to ``reports``."""
    sdk = SDK.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, kind = ((sdk, "text/javascript") if self.path == "/mixpanel.umd.js"
                          else (page.encode(), "text/html"))
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            reports.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _browser(url: str, profile: Path) -> Iterator[subprocess.Popen[bytes]]:
    assert CHROMIUM is not None
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _landed(data: Path) -> bool:
    names = {e.get("event") for e in read_received(data, "track")}
    return ({"Signed Up", "$identify", "Order Completed"} <= names
            and bool(read_received(data, "engage")) and bool(read_received(data, "groups")))


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "one-request-per-call"])
def test_mixpanel_browser_lands_track_people_and_groups(kit: Any, tmp_path: Path, serve: Any,
                                                        batch: bool) -> None:
    data = kit.build_project(tmp_path / "p")
    with serve(data, clock=time.time) as (api, _):
        page = PAGE % {"token": TOKEN, "api": api, "batch": "true" if batch else "false"}
        reports: list[dict[str, Any]] = []
        with _site(page, reports) as site, _browser(site, tmp_path / "profile") as browser:
            deadline = time.monotonic() + 60
            while not (reports and _landed(data)) and time.monotonic() < deadline:
                assert browser.poll() is None, "chromium exited early"
                time.sleep(0.2)
    assert _landed(data), f"landed: {read_received(data, 'track')}"
    assert reports, "the page never reported what the SDK made of the answers"
    [report] = reports
    # The SDK read every answer as a success (it cannot when CORS refuses it: status 0),
    # reported no error and kept nothing queued for a retry. In batch mode the calls are
    # answered 1 once queued; the errors tell whether the batches' answers were read.
    assert len(report["answers"]) == 4
    assert all(a in (1, {"status": 1, "error": None}) for a in report["answers"]), report
    assert report["errors"] == []
    assert all(not queue for queue in report["queues"].values()), report["queues"]

    tracked = read_received(data, "track")
    ids = [e["properties"]["$insert_id"] for e in tracked]
    assert len(ids) == len(set(ids)), "an event landed twice: the SDK resent a batch"
    by_name = {e["event"]: e["properties"] for e in tracked}
    signed_up, order = by_name["Signed Up"], by_name["Order Completed"]
    for props in (signed_up, order):
        assert props["token"] == TOKEN and props["mp_lib"] == "web"
        assert props["$lib_version"] == "2.83.0" and props["$browser"] == "Chrome"
        assert props["plan"] == "pro" and props["$current_url"] == site
        assert isinstance(props["time"], int | float) and abs(props["time"] - time.time()) < 300
        assert props["$device_id"]
    assert signed_up["price"] == 9.5 and signed_up["items"] == ["a", "b"]
    assert signed_up["distinct_id"] == "$device:" + signed_up["$device_id"]
    assert order["distinct_id"] == "user-42" and order["$user_id"] == "user-42"
    assert order["company_id"] == ["acme"] and order["amount"] == 12.5
    identify = by_name["$identify"]
    assert identify["$anon_distinct_id"] == signed_up["distinct_id"]

    people = read_received(data, "engage")
    assert [p["$distinct_id"] for p in people if "$set" in p and "$email" in p["$set"]] == ["user-42"]
    [person] = [p for p in people if "$set" in p and "$email" in p["$set"]]
    assert person["$token"] == TOKEN and person["$set"]["plan"] == "pro"
    groups = read_received(data, "groups")
    assert any(g["$group_key"] == "company_id" and g["$group_id"] == "acme"
               and g.get("$set") == {"name": "Acme"} for g in groups)
