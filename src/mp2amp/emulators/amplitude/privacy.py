"""User Privacy API v1 deletion jobs: create, list, remove one user, and move jobs forward.

Jobs start in ``staging`` for a day ``deletion_delay_days`` ahead; new requests join the
open staging job unless it is within 3 days of its day (Amplitude's freeze), in which case
they start a new one. Only the emulator's advance endpoint moves jobs on
(staging -> submitted -> done); at ``done`` the users' events and properties are erased.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from mp2amp.emulators.amplitude.ids import Identities
from mp2amp.emulators.amplitude.store import EventStore, read_json, write_atomic

MAX_IDS = 100
MAX_LIST_DAYS = 184  # "The largest permitted time range is six months"
FREEZE_DAYS = 3


class PrivacyRequestError(ValueError):
    """A 400: the message says which parameter is wrong. ``extra`` goes in the body."""

    def __init__(self, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.extra = extra or {}


def flag(value: Any) -> bool:
    """Booleans arrive as JSON booleans or as the strings "true"/"True"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value is None:
        return False
    raise PrivacyRequestError(f"expected a boolean (true/false or \"true\"/\"false\"), got {value!r}")


def _day(value: str | None, name: str) -> date:
    try:
        return datetime.strptime(value or "", "%Y-%m-%d").date()
    except ValueError:
        raise PrivacyRequestError(f"{name}={value!r}: expected YYYY-MM-DD") from None


class DeletionJobs:
    def __init__(self, path: Path, project_id: int, delay_days: int,
                 today: Callable[[], date]) -> None:
        self.path = path
        self.app = str(project_id)
        self.delay_days = delay_days
        self.today = today
        self.jobs: list[dict[str, Any]] = read_json(path, [])
        self.unsaved = False  # jobs moved on since deletions.json was last written

    def save(self) -> None:
        write_atomic(self.path, orjson.dumps(self.jobs))
        self.unsaved = False

    def create(self, body: dict[str, Any], ids: Identities) -> list[dict[str, Any]]:
        amplitude_ids = body.get("amplitude_ids") or []
        user_ids = body.get("user_ids") or []
        if not isinstance(amplitude_ids, list) or not isinstance(user_ids, list):
            raise PrivacyRequestError("amplitude_ids and user_ids must be lists")
        if not amplitude_ids and not user_ids:
            raise PrivacyRequestError("give at least one of amplitude_ids or user_ids")
        if len(amplitude_ids) + len(user_ids) > MAX_IDS:
            raise PrivacyRequestError(
                f"at most {MAX_IDS} amplitude_ids and user_ids per request, "
                f"got {len(amplitude_ids) + len(user_ids)}")
        # "Forced to true when delete_from_org is true" (every other project is not emulated)
        ignore = flag(body.get("ignore_invalid_id", body.get("ignore_invalid_ids"))) \
            or flag(body.get("delete_from_org"))
        # "When true, the response includes the user_id mapped to each supplied amplitude_id"
        mapped = flag(body.get("include_mapped_user_ids"))
        requester = body.get("requester")
        today = self.today().isoformat()
        entries: list[dict[str, Any]] = []
        invalid: list[Any] = []
        owners: dict[int, str] | None = None
        for raw in amplitude_ids:
            try:
                aid = int(raw)
            except (TypeError, ValueError):
                invalid.append(raw)
                continue
            if not ids.known_amplitude_id(aid):
                invalid.append(raw)
                continue
            entry: dict[str, Any] = {"amplitude_id": ids.canonical(aid), "requester": requester,
                                     "requested_on_day": today}
            if mapped:
                if owners is None:  # one pass over the users per request, not per ID
                    owners = ids.owners()
                owner = owners.get(ids.canonical(aid))
                if owner is not None:
                    entry["user_id"] = owner
            entries.append(entry)
        for user_id in user_ids:
            found = ids.lookup_user(str(user_id)) if user_id is not None else None
            if found is None:
                invalid.append(user_id)
                continue
            entries.append({"amplitude_id": found, "requester": requester,
                            "requested_on_day": today, "user_id": str(user_id)})
        if invalid and not ignore:
            raise PrivacyRequestError(
                "some IDs are not in this project; no user was marked (send "
                "ignore_invalid_ids=true to delete the others)", {"invalid_ids": invalid})
        if not entries:  # ignoring them, with nobody left to delete: no job to add to
            return [{"amplitude_ids": [], "user_ids": [], "invalid_ids": invalid}]
        job = self._open_job()
        known = {e["amplitude_id"] for e in job["amplitude_ids"]}
        for entry in entries:
            if entry["amplitude_id"] not in known:
                job["amplitude_ids"].append(entry)
                known.add(entry["amplitude_id"])
        job["user_ids"] = sorted({e["user_id"] for e in job["amplitude_ids"] if "user_id" in e})
        self.save()
        answer = dict(job)
        if invalid:
            answer["invalid_ids"] = invalid
        return [answer]

    def _open_job(self) -> dict[str, Any]:
        today = self.today()
        for job in self.jobs:
            if job["status"] == "staging" and (
                date.fromisoformat(job["day"]) - today).days > FREEZE_DAYS:
                return job
        job = {"amplitude_ids": [], "app": self.app, "day":
               (today + timedelta(days=self.delay_days)).isoformat(), "status": "staging",
               "user_ids": []}
        self.jobs.append(job)
        return job

    def list(self, start_day: str | None, end_day: str | None) -> list[dict[str, Any]]:
        start, end = _day(start_day, "start_day"), _day(end_day, "end_day")
        if end < start:
            raise PrivacyRequestError(f"end_day {end} is before start_day {start}")
        if (end - start).days > MAX_LIST_DAYS:
            raise PrivacyRequestError("the largest permitted time range is six months")
        return [j for j in self.jobs if start <= date.fromisoformat(j["day"]) <= end]

    def remove(self, amplitude_id: str, day: str) -> dict[str, Any] | None:
        """Take one user out of a staging job; None when there is no such entry."""
        _day(day, "JOB_START_DAY")
        try:
            aid = int(amplitude_id)
        except ValueError:
            raise PrivacyRequestError(f"amplitude_id {amplitude_id!r} is not an integer") from None
        for job in self.jobs:
            if job["day"] != day:
                continue
            for entry in job["amplitude_ids"]:
                if entry["amplitude_id"] == aid:
                    if job["status"] != "staging":
                        raise PrivacyRequestError(
                            f"the job of {day} is {job['status']}: only staging jobs can change")
                    job["amplitude_ids"].remove(entry)
                    if not job["amplitude_ids"]:
                        self.jobs.remove(job)
                    self.save()
                    return {k: entry[k] for k in ("amplitude_id", "requested_on_day", "requester")}
        return None

    def advance(self, ids: Identities, store: EventStore, day: str | None = None,
                erased: Callable[[int], None] | None = None) -> dict[str, Any]:
        """``move``, then save deletions.json."""
        result = self.move(ids, store, day, erased)
        self.save()
        return result

    def move(self, ids: Identities, store: EventStore, day: str | None = None,
             erased: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Move every unfinished job (or the one of ``day``) one status forward, in memory
        (``unsaved`` until ``save``). ``erased`` is told each erased file's count as it goes.

        The submitted jobs are finished first: when a rewrite fails (disk full) the error is
        raised with that job still submitted and no staging job moved, so advancing again
        moves each job exactly one step."""
        chosen = [job for job in self.jobs if day is None or job["day"] == day]
        erased_events = 0
        for job in chosen:
            if job["status"] == "submitted":
                erased_events += self._finish(job, ids, store, erased)
        for job in chosen:
            if job["status"] == "staging":
                job["status"] = "submitted"
                self.unsaved = True
        return {"jobs": self.jobs, "events_erased": erased_events}

    def _finish(self, job: dict[str, Any], ids: Identities, store: EventStore,
                erased: Callable[[int], None] | None) -> int:
        """Erase a submitted job's people: journaled, forgotten (as a restart replaying the
        journal would), then their events rewritten away."""
        aids = {ids.canonical(e["amplitude_id"]) for e in job["amplitude_ids"]}
        store.journal_deletion(ids.journal, aids)
        ids.journal = []
        ids.forget(aids)
        count = store.rewrite_without(aids, ids.canonical, erased)
        job["status"] = "done"
        job["active_scrub_done_date"] = self.today().isoformat()
        self.unsaved = True
        return count
