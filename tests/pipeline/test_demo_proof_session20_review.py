"""Session 20 review: how strong is the proof of ``mp2amp demo``, tested as a mutation test.

Each test copies ``src`` (without the compiled ``.so`` files, so the edited pure-Python
source is what runs) into ``tmp_path``, injects one plausible migration bug, runs
``mp2amp demo --events 10000`` on the copy and asserts that the demo fails (exit non-zero).
A mutation the demo lets through (exit 0, "demo OK") is a hole in the proof and is pinned
as ``xfail(strict=True)``.

Mutations that the demo DID catch when this file was written (not pinned): an hour added
to some events' time, every event's ms dropped, 1 event in 5,000 dropped after the
migration counted it, revenue/price/amount x100, ``currency`` dropped, ``plan`` renamed,
``price`` sent as text, an anonymous event's device_id given as user_id (or moved
there), ``groups`` dropped on some events, one event type renamed, and a +1 h shift in
the shared ``timeconv.seconds_to_ms`` (caught only through 7 events, by chance).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EVENTS = "10000"
# a hook in the transform worker: every Amplitude event dict passes through it just before
# it is serialized for upload (the fast and the general transform path alike)
_HOOK_FILE = "mp2amp/pipeline/transform_worker.py"
_HOOK_OLD = "        try:\n            data = dumps(out)\n"
_HOOK_NEW = ("        out = __import__('mp2amp.mutation', fromlist=['m']).mutate(out)\n"
             + _HOOK_OLD)


def _mutated_demo(tmp_path: Path, edits: list[tuple[str, str, str]],
                  hook: str | None = None) -> subprocess.CompletedProcess[str]:
    """Copy src without compiled modules, apply ``edits`` (file, old, new: ``old`` must be
    there exactly once) and the optional ``hook`` (``mutate(out) -> out``), run the demo."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    edits = list(edits)
    if hook is not None:
        edits.append((_HOOK_FILE, _HOOK_OLD, _HOOK_NEW))
        (src / "mp2amp" / "mutation.py").write_text(hook)
    for rel, old, new in edits:
        path = src / rel
        text = path.read_text()
        assert text.count(old) == 1, f"mutation anchor not found once in {rel}: {old!r}"
        path.write_text(text.replace(old, new))
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [sys.executable, "-m", "mp2amp", "demo", "--events", EVENTS, "--json",
         "--workdir", str(tmp_path / "wd")],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=100)


def _assert_caught(result: subprocess.CompletedProcess[str], kind: str | None = None) -> None:
    """The demo failed; with ``kind``, it exited 1 and its per-event check counted that
    kind of problem and showed an example of it."""
    assert result.returncode != 0, (
        "the demo passed (exit 0) with a migration bug injected: "
        + result.stdout[:300].replace("\n", " "))
    if kind is not None:
        assert result.returncode == 1, result.stderr[-500:]
        events = json.loads(result.stdout)["events"]
        assert events["problems"][kind] > 0, events["problems"]
        assert any(e.startswith(f"{kind}: ") for e in events["examples"]), events["examples"]


def test_a_constant_session_id_fails_the_demo(tmp_path: Path) -> None:
    _assert_caught(_mutated_demo(tmp_path, [(
        _HOOK_FILE,
        'return b"%s,\\"session_id\\":%d}" % (data[:-1], self._session_id(device, user, t))',
        'return b"%s,\\"session_id\\":%d}" % (data[:-1], 1709251200000)')]), "wrong_session")


def test_wrong_location_fields_fail_the_demo(tmp_path: Path) -> None:
    _assert_caught(_mutated_demo(tmp_path, [], hook=(
        "def mutate(out):\n"
        "    if out.get('city'):\n"
        "        out['city'] = 'Paris'\n"
        "        out['country'] = 'France'\n"
        "    return out\n")), "wrong_location")


def test_dropped_device_fields_fail_the_demo(tmp_path: Path) -> None:
    _assert_caught(_mutated_demo(tmp_path, [], hook=(
        "def mutate(out):\n"
        "    for k in ('platform', 'os_name', 'os_version', 'device_model', 'device_brand',\n"
        "              'device_manufacturer', 'app_version', 'language', 'carrier'):\n"
        "        out.pop(k, None)\n"
        "    return out\n")), "wrong_device_fields")


def test_a_wrong_kept_default_property_value_fails_the_demo(tmp_path: Path) -> None:
    _assert_caught(_mutated_demo(tmp_path, [], hook=(
        "def mutate(out):\n"
        "    ep = out.get('event_properties') or {}\n"
        "    if '[Amplitude] Page Title' in ep:\n"
        "        ep['[Amplitude] Page Title'] = 'Home'\n"
        "    return out\n")), "wrong_properties")


def test_a_renamed_readable_default_property_fails_the_demo(tmp_path: Path) -> None:
    _assert_caught(_mutated_demo(tmp_path, [(
        "mp2amp/transform/mapping.py", '"[Amplitude] Page Title"', '"Page Title"')]), "properties_lost")


def test_strings_cut_at_100_characters_fail_the_demo(tmp_path: Path) -> None:
    """Caught by the values of the generator's 100-1024-character custom text (dirt
    medium_strings), not by anything else."""
    result = _mutated_demo(tmp_path, [(
        "mp2amp/transform/values.py",
        "        stats.truncated[_label(prop)] += 1\n        return value[:MAX_STRING]",
        "        stats.truncated[_label(prop)] += 1\n        return value[:100]")], hook=(
        "def mutate(out):\n"
        "    ep = out.get('event_properties') or {}\n"
        "    for k, v in list(ep.items()):\n"
        "        if type(v) is str and len(v) > 100:\n"
        "            ep[k] = v[:100]\n"
        "    return out\n"))
    _assert_caught(result, "wrong_properties")


def test_truncated_list_and_object_values_fail_the_demo(tmp_path: Path) -> None:
    _assert_caught(_mutated_demo(tmp_path, [], hook=(
        "def mutate(out):\n"
        "    ep = out.get('event_properties') or {}\n"
        "    for k, v in list(ep.items()):\n"
        "        if type(v) is list and len(v) > 1:\n"
        "            ep[k] = v[:1]\n"
        "        elif type(v) is dict:\n"
        "            ep[k] = {}\n"
        "    return out\n")), "wrong_properties")


def test_leaked_extra_properties_fail_the_demo(tmp_path: Path) -> None:
    _assert_caught(_mutated_demo(tmp_path, [], hook=(
        "def mutate(out):\n"
        "    ep = out.get('event_properties')\n"
        "    if ep is not None:\n"
        "        ep['mp_processing_time_ms'] = 0\n"
        "        ep['distinct_id'] = out.get('user_id') or out.get('device_id')\n"
        "    return out\n")), "extra_properties")


def test_a_verbatim_insert_id_fails_the_demo(tmp_path: Path) -> None:
    """Caught through the generator's $insert_ids reused on a later event of one device
    (dirt reused_insert_ids): Amplitude drops that event as a copy of the earlier one."""
    result = _mutated_demo(tmp_path, [
        ("mp2amp/transform/insert_id.py", '    return f"{text}-{short.hexdigest()}"',
         "    return text"),
        ("mp2amp/transform/events.py", 'iid = f"{text}-{short.hexdigest()}"', "iid = text")])
    # the later event is dropped: the proof matches the earlier one against it
    _assert_caught(result, "wrong_time")


def test_an_hour_shift_on_some_events_fails_the_demo(tmp_path: Path) -> None:
    """A guard: the proof sees an event an hour off on its day (wrong_time)."""
    result = _mutated_demo(tmp_path, [], hook=(
        "import zlib\n"
        "def mutate(out):\n"
        "    if zlib.crc32(out['insert_id'].encode()) % 50 == 0:\n"
        "        out['time'] += 3600000\n"
        "    return out\n"))
    _assert_caught(result)
    assert '"wrong_time"' in result.stdout
