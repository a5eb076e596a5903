"""The run's fingerprint (what must not change between a run and its resume), with a
digest of every setting that decides which events a window emits.

Why: a resumed run cuts each window into batches again and skips those the ledger has as
done, by their ids (window, number). Those ids name the same events only if the transform
emits the same events: a privacy rule, tracking plan, excluded-users file, time zone or
session gap changed between a run and its resume shifted the cuts, so that a done batch id
could skip events never sent, or send others twice (the end-of-run check then found the
windows unbalanced, after the mixed data had gone out). The run's fingerprint holds this
digest, so such a resume is refused up front.

Files the settings name (plan, excluded users, the identity table) count by their
content; the hash salt by a slow (scrypt) digest of it (the ledger never holds a secret,
nor a fast hash to guess a weak one from). Settings that only tune speed or the connection
(workers, memory, hosts, credentials, Export API limits) are left out. Input and output
locations inside the config file's folder count by their path relative to it: a project
folder moved whole (to a bigger disk) resumes.

The Amplitude API key is not in the fingerprint (a key Amplitude refused at once must stay
correctable), but a salted digest of it, recorded with the first batch sent under it,
binds the run: a resume with another key would send the rest to another project. It is
dropped only when Amplitude refused every request sent under it as an invalid key; a key
regenerated for the same project is taken on with ``--new-api-key`` (all of this in
``api_key_binding``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import glob
import hashlib
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mp2amp.config import Config
from mp2amp.config.sections import HASH_SALT_ENV, Secret
from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.load.settings import UploadSettings
from mp2amp.transform.insert_id import RESUMABLE_SCHEMES
from mp2amp.transform.insert_id import SCHEME as INSERT_ID_SCHEME

if TYPE_CHECKING:  # the uploader's modules are not needed to read a fingerprint
    pass

log = logging.getLogger("mp2amp.migrate")

FINGERPRINT_META = "fingerprint"
FOLDER_META = "config_folder"  # the config file's folder when the run started
# [mixpanel] fields that change what is read or how times are read
_MIXPANEL_FIELDS = ("project_id", "timezone", "legacy_time", "timezone_changes", "id_merge")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _content(path: Path) -> str | None:
    """A file's content digest, read 1 MiB at a time (an identity table may be gigabytes:
    never held whole); a folder's by its files' names and sizes (reading every byte of a
    folder of tables on each run would cost minutes); None for what cannot be read here
    (missing: the config check reports it). The identity table's own form: ``_table``."""
    try:
        if path.is_dir():
            listing = sorted((str(p.relative_to(path)), p.stat().st_size)
                             for p in path.rglob("*") if p.is_file())
            return "folder:" + _digest(orjson.dumps(listing))
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        return sha.hexdigest()[:16]
    except OSError:
        return None


@functools.lru_cache(maxsize=4)
def _slow_digest(secret: str) -> str:
    """A secret's digest through a slow KDF (~16 MiB, tens of ms): the ledger is no
    file to guess a weak hash salt from offline."""
    return hashlib.scrypt(secret.encode(), salt=b"mp2amp-fingerprint", n=1 << 14, r=8, p=1,
                          dklen=8).hex()


def _canonical(value: Any, legacy: bool = False) -> Any:
    """JSON-ready, with files as their content's digest and secrets as a digest (``legacy``:
    the plain SHA-256 of runs started before the KDF, accepted on their resume)."""
    if isinstance(value, Secret):
        if legacy:
            return "secret:" + _digest(b"mp2amp-fingerprint\x00" + value.reveal().encode())
        return "secret-kdf:" + _slow_digest(value.reveal())
    if isinstance(value, Path):
        # by content alone when it can be read: the same plan moved elsewhere is the same
        content = _content(value)
        return {"file": str(value)} if content is None else {"content": content}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name), legacy)
                for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v, legacy) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v, legacy) for k, v in value.items()}
    return value


def events_fingerprint(config: Config, legacy: bool = False, listed: bool = True) -> str:
    return _digest(orjson.dumps(_events_doc(config, legacy, listed),
                                option=orjson.OPT_SORT_KEYS, default=str))


def _events_doc(config: Config, legacy: bool = False, listed: bool = True) -> dict[str, Any]:
    return {
        "mixpanel": {name: _canonical(getattr(config.mixpanel, name))
                     for name in _MIXPANEL_FIELDS},
        "transform": _canonical(config.transform),
        "privacy": _canonical(config.privacy, legacy),
        # by its content, as the files [transform] and [privacy] name (None: no table, the
        # same digest as before the table's content counted)
        "identity_table": None if config.source.identity_table is None
        else _table(config.source.identity_table, config.source.storage_options, listed),
    }


# the config section each part of ``_events_doc`` comes from, as a message names it
_SECTIONS = ("mixpanel", "transform", "privacy")


def _settings_of(doc: dict[str, Any], config: Config) -> dict[str, str]:
    """Each setting of ``_events_doc`` by its name in the config (``[transform] plan``,
    ``[transform.revenue] price``), as a short digest of its value: what a refused resume
    names as changed. Digests, not values: the hash salt is a secret, and files count by
    their content."""
    out: dict[str, str] = {}

    def add(table: str, values: dict[str, Any], section: Any) -> None:
        for name, value in values.items():
            part = getattr(section, name, None)
            if dataclasses.is_dataclass(part) and isinstance(value, dict):  # a sub-table
                add(f"{table}.{name}", value, part)
            else:
                out[f"[{table}] {name}"] = _value_digest(value)

    for section, values in doc.items():
        if section in _SECTIONS and isinstance(values, dict):
            add(section, values, getattr(config, section))
        else:
            out["[source] identity_table" if section == "identity_table" else section] = \
                _value_digest(values)
    return out


def _value_digest(value: Any) -> str:
    return _digest(orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str))


def event_settings(config: Config) -> dict[str, str]:
    """``_settings_of`` the configuration: recorded beside the fingerprint
    (``SETTINGS_META``), compared only to name what a refused resume changed."""
    return _settings_of(_events_doc(config), config)


def _table(table: str, options: Mapping[str, Any] | None, listed: bool = True) -> Any:
    """The identity table as the fingerprint holds it: a local file by its content, a local
    folder by the names and sizes of the part files read, a local glob by its files' contents
    (named below the glob's fixed folder: a project folder moved whole resumes), and an
    ``s3://`` or ``gs://`` table by its objects' names, sizes and content hashes (ETag,
    GCS md5Hash) from one listing: rewritten between a run and its resume, a table resolves
    the rest of the events to other users (a soak saw a remote one taken on silently, and
    an in-flight batch's user-only events stored twice under two user_ids). ``listed``
    False: as runs started before 2026-12-01 recorded it (a glob, remote or ``file://``
    table by its location; ``_unless_legacy_table``)."""
    if not listed:
        return _canonical(Path(table))
    listed_here = _LISTED.get()
    key = (table, orjson.dumps(dict(options or {}), option=orjson.OPT_SORT_KEYS, default=str))
    if listed_here is not None and key in listed_here:
        return listed_here[key]
    held = _listed(table, options)
    if listed_here is not None:
        listed_here[key] = held
    return held


# within ``one_listing``: each table's listing, taken once (per thread and task: a context
# variable, so that runs in two threads never share or end each other's)
_LISTED: contextvars.ContextVar[dict[tuple[str, bytes], Any] | None] = \
    contextvars.ContextVar("mp2amp_identity_table_listings", default=None)


@contextmanager
def one_listing() -> Iterator[None]:
    """Within it, each identity table is listed (or hashed) once: what a resume compares
    is what it records (a table rewritten between the two was recorded unseen)."""
    token = _LISTED.set({} if _LISTED.get() is None else _LISTED.get())
    try:
        yield
    finally:
        _LISTED.reset(token)


def _listed(table: str, options: Mapping[str, Any] | None) -> Any:
    remote = "://" in table and not table.startswith("file://")
    local = table.removeprefix("file://")
    folder = not remote and Path(local).is_dir()
    if not remote and not folder and (not glob.has_magic(local) or Path(local).exists()):
        return _canonical(Path(local))
    from mp2amp.extract.files import expand_paths  # not needed to read a fingerprint

    try:
        files = expand_paths([table], storage_options=dict(options) if options else None,
                             every_file=True)
    except Exception as exc:
        if not remote and isinstance(exc, InputError):
            return _canonical(Path(local))  # no file matches: the identity stage says so
        # a listing that failed (network, credentials) is no "changed table": the run needs
        # the table anyway, and says what to do
        raise InputError(f"the identity mapping table ([source] identity_table) cannot be "
                         f"listed, and a run checks it has not changed before it starts or "
                         f"goes on: {exc}") from None
    if remote:
        listing = sorted((f.url, f.size, f.checksum or f.version) for f in files)
        return {"listing": _digest(orjson.dumps(listing))}
    if folder:  # the part files read (no marker, no hidden file; linked folders followed)
        try:
            sizes = sorted((os.path.relpath(f.url, local), os.stat(f.url).st_size)
                           for f in files)
        except OSError as exc:  # a part removed since the listing
            raise InputError(f"the identity mapping table ([source] identity_table) changed "
                             f"while it was being listed ({exc}); run the same command "
                             "again") from None
        return "folder:" + _digest(orjson.dumps(sizes))
    parts = Path(local).parts
    fixed = Path(*itertools.takewhile(lambda p: not glob.has_magic(p), parts))
    return {"files": sorted((os.path.relpath(f.url, fixed), _content(Path(f.url)))
                            for f in files)}


TABLE_META = "identity_table"  # the table's own part of the fingerprint, checked when read


def _table_now(config: Config) -> str | None:
    table = config.source.identity_table
    if table is None:
        return None
    return orjson.dumps(_table(table, config.source.storage_options),
                        option=orjson.OPT_SORT_KEYS, default=str).decode()


def finish_graph(graph: Any, ledger: Ledger, config: Config) -> Any:
    """``graph.finish()``, which reads the identity table, between two checks that the
    table is the one this run recorded when it started or resumed: the read comes after
    every window is extracted (hours, on a long Export API run), and a table rewritten
    meanwhile would resolve the rest of the events to other users unseen."""
    _check_table(ledger, config)
    finished = graph.finish()
    _check_table(ledger, config)
    return finished


def _check_table(ledger: Ledger, config: Config) -> None:
    recorded = ledger.get_meta(TABLE_META)
    now = _table_now(config)
    if recorded is None or now is None or now == recorded:
        return
    raise TerminalError(
        f"the identity mapping table ([source] identity_table) {config.source.identity_table} "
        "changed while this run was going (it is not what it was when the run started or "
        "resumed): nothing was sent with it; put it back as it was and run the same command "
        "with --resume, or start a new run in a new work folder")


def config_folder(config: Config) -> Path | None:
    """The folder relative locations of the config file are read from (None: no file)."""
    return None if config.path is None else Path(config.path).resolve().parent


def _location(value: str | None, folder: Path | None) -> str | None:
    """``value`` relative to ``folder`` when it lies inside it, else as it is."""
    if value is None or folder is None or "://" in value or not os.path.isabs(value):
        return value
    path = Path(value)
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else value


def run_fingerprint(config: Config, upload: UploadSettings,
                    folder: Path | None = None, scheme: int = INSERT_ID_SCHEME) -> dict[str, Any]:
    """What must not change between a run and its resume (batch ids depend on it); with
    ``folder``, the locations inside it relative to it; ``scheme``: the run's insert_ids."""
    events = _events_doc(config)  # files it names are read once per listing (one_listing)
    return {
        "source": {"files": [_location(f, folder) for f in config.source.files],
                   "from_date": str(config.source.from_date),
                   "to_date": str(config.source.to_date),
                   **({"export_window_days": config.source.export_window_days}
                      if config.source.export_window_days != 1 else {})},
        "id_merge": config.mixpanel.id_merge,
        "endpoint": upload.endpoint,
        "concurrency": upload.concurrency,
        "max_events": upload.max_events,
        "max_bytes": upload.limits.max_bytes,
        "output_dir": _location(config.amplitude.output_dir, folder),
        # which events Amplitude takes (short IDs): under another minimum a resume would
        # send part of a user's history and dead-letter the rest (S3 import has no option)
        **({"min_id_length": upload.min_id_length}
           if config.amplitude.output_dir is None else {}),
        # what decides which events each window emits, and so where its batches are cut
        # (a changed privacy rule or plan would shift them under the same batch ids)
        "events": _value_digest(events),
        # how insert_ids are made: a resume under another scheme would resend in-flight
        # batches under new ids (duplicates), so a run goes on under its own (one of
        # RESUMABLE_SCHEMES) and one started by an mp2amp that recorded none (scheme 1) is
        # refused
        "insert_ids": scheme,
    }


# ``events`` setting by setting (``event_settings``), in a ledger meta key of its own: a
# key in the fingerprint would be compared by an mp2amp that does not know it, which would
# then refuse every run this one resumed (it did so for a day, in the fingerprint itself:
# such runs are still read, the key not compared)
EVENT_SETTINGS = "event_settings"
SETTINGS_META = EVENT_SETTINGS
FINGERPRINT_NAMES = {
    "id_merge": "[mixpanel] id_merge",
    "insert_ids": "the insert_id scheme (this mp2amp makes ids of scheme "
                  f"{' or '.join(map(str, RESUMABLE_SCHEMES))}; the run was started by "
                  "another version, earlier or later: finish it with that version)",
    "events": "the [mixpanel] time and project settings, [transform], [privacy] or the files "
              "they name",
    "min_id_length": "[amplitude] min_id_length (which events Amplitude takes: events the "
                     "run sent or dead-lettered were judged by the first)",
}


def changed_keys(known: str, now: dict[str, Any]) -> list[str] | None:
    """The fingerprint keys that differ, None when they all match. A run started by an
    older mp2amp lacks the newer keys: those are not compared (it could not resume)."""
    try:
        was = orjson.loads(known)
    except orjson.JSONDecodeError:
        return ["fingerprint"]
    if not isinstance(was, dict):
        return ["fingerprint"]
    now = orjson.loads(orjson.dumps(now))  # the stored form: tuples as lists, and so on
    was.setdefault("insert_ids", 1)  # runs that recorded none made scheme-1 ids
    if was["insert_ids"] in RESUMABLE_SCHEMES and now.get("insert_ids") in RESUMABLE_SCHEMES:
        now["insert_ids"] = was["insert_ids"]  # the run goes on under its own scheme
    changed = sorted(k for k in was.keys() | now.keys()
                     if k in was and was[k] != now.get(k))
    return changed or None


def _dumps(fingerprint: dict[str, Any]) -> str:
    return orjson.dumps(fingerprint, option=orjson.OPT_SORT_KEYS).decode()


def record_fingerprint(ledger: Ledger, config: Config, upload: UploadSettings,
                       anew: bool = False) -> None:
    """The run's fingerprint, its locations relative to the config file's folder (``anew``:
    the run was planned again here, its windows named from this folder, and nothing was
    sent yet: its insert_ids are of this mp2amp's scheme)."""
    folder = config_folder(config)
    scheme = INSERT_ID_SCHEME if anew else run_insert_id_scheme(ledger)
    with one_listing():  # the fingerprint and the table's meta: of one listing
        ledger.set_meta(FINGERPRINT_META, _dumps(run_fingerprint(config, upload, folder,
                                                                 scheme)))
        ledger.set_meta(SETTINGS_META, _dumps(event_settings(config)))
        table = _table_now(config)
    if table is not None:
        ledger.set_meta(TABLE_META, table)
    # the folder the run started in: its windows are named by their paths there
    if folder is not None and (anew or ledger.get_meta(FOLDER_META) is None):
        ledger.set_meta(FOLDER_META, str(folder))


def run_insert_id_scheme(ledger: Ledger) -> int:
    """The insert_id scheme of the run the ledger holds: the one its fingerprint records
    when this mp2amp makes ids of it, else (a new run) this mp2amp's own."""
    known = ledger.get_meta(FINGERPRINT_META)
    try:
        recorded = orjson.loads(known).get("insert_ids") if known is not None else None
    except (orjson.JSONDecodeError, AttributeError):
        recorded = None
    return recorded if recorded in RESUMABLE_SCHEMES else INSERT_ID_SCHEME


def _absolute(value: Any, folder: str | None) -> Any:
    """A recorded location as an absolute path (it was recorded relative to ``folder``)."""
    if not isinstance(value, str) or folder is None or "://" in value or os.path.isabs(value):
        return value
    return (Path(folder) / value).as_posix()


def _still_there(location: str) -> bool:
    """Whether a local location (a glob: its folder) exists."""
    parts = Path(location).parts
    static = list(itertools.takewhile(lambda p: not glob.has_magic(p), parts))
    return bool(static) and Path(*static).exists()


def _same_places(known: str, now: dict[str, Any], absolute: dict[str, Any],
                 folder: str | None) -> dict[str, Any]:
    """``now`` with each location that is where the run's recorded one was (their absolute
    forms match, and it is still there) written as recorded: a config file moved alone,
    its inputs where they were, names them by other relative paths, or none. (A project
    folder moved whole, its inputs named by their old absolute paths, is refused.)"""
    try:
        was = orjson.loads(known)
    except orjson.JSONDecodeError:
        return now
    if not isinstance(was, dict) or not isinstance(was.get("source"), dict):
        return now

    def same(recorded: Any, current: Any, at: Any) -> Any:
        if at is None or _absolute(recorded, folder) != at or not _still_there(at):
            return current
        return recorded

    files, at = now["source"]["files"], absolute["source"]["files"]
    recorded = was["source"].get("files")
    if isinstance(recorded, list) and len(recorded) == len(files):
        files = [same(r, f, Path(a).as_posix()) for r, f, a in zip(recorded, files, at,
                                                                   strict=True)]
    out = absolute["output_dir"]
    return {**now, "source": {**now["source"], "files": files},
            "output_dir": same(was.get("output_dir"), now["output_dir"],
                               None if out is None or "://" in out else Path(out).as_posix())}


def check_resume(ledger: Ledger, config: Config, upload: UploadSettings, known: str,
                 may_change: Callable[[list[str]], bool],
                 replan: Callable[[], None] | None = None) -> None:
    """Refuse a resume whose configuration differs from the run's in what decides its
    batches. ``may_change(changed)`` lets the caller accept a change (an S3-import folder
    refused before anything was written), whose new fingerprint is then recorded.
    ``replan``: given while the run has staged and sent nothing (a project_id Mixpanel
    refused, corrected as its message says), any change is taken: the run is planned
    again from this configuration (``replan``) and its fingerprint recorded anew."""
    with one_listing():  # what is compared is what is recorded
        _check_resume(ledger, config, upload, known, may_change, replan)


def _check_resume(ledger: Ledger, config: Config, upload: UploadSettings, known: str,
                  may_change: Callable[[list[str]], bool],
                  replan: Callable[[], None] | None) -> None:
    scheme = run_insert_id_scheme(ledger)  # the run's own (a refused one: this mp2amp's)
    now = _same_places(known, run_fingerprint(config, upload, config_folder(config), scheme),
                       run_fingerprint(config, upload, None, scheme),
                       ledger.get_meta(FOLDER_META))
    changed = _settings_follow_events(_unless_legacy_table(
        _unless_legacy_salt(changed_keys(known, now), known, config), known, config))
    if changed and ledger.get_meta(FOLDER_META) is None and _settings_follow_events(
            _unless_legacy_table(_unless_legacy_salt(
                changed_keys(known, run_fingerprint(config, upload, None, scheme)), known,
                config),
                known, config)) is None:
        changed = []  # started by an mp2amp that kept absolute paths: recorded anew
    if changed and may_change(changed):
        changed = []
    if changed and replan is not None:
        log.info("the configuration changed (%s) before anything was staged or sent: the "
                 "run goes on with the new one", ", ".join(changed))
        replan()  # first: a crash before the new fingerprint plans it again next time
        record_fingerprint(ledger, config, upload, anew=True)
        return
    if not changed:  # its locations as the config names them now (an older run: relative)
        record_fingerprint(ledger, config, upload)
    if changed:
        names = [_named(k, known, ledger.get_meta(SETTINGS_META), config) for k in changed]
        # id_merge is also a setting of ``events``: named once
        named = ", ".join(n for n in dict.fromkeys(names)
                          if not any(n != other and n in other for other in names))
        what_next = _stripped_salt(changed, known, config) or (
            "; resume with the original settings, or start a new run in a new work folder")
        raise TerminalError(
            "this configuration differs from the one the run started with in what decides "
            f"its batches ({named}; was {_shown(known)}, now {_dumps(_without_settings(now))})"
            f"{_moved(ledger, config)}"
            f"{what_next}")


def _settings_follow_events(changed: list[str] | None) -> list[str] | None:
    """``changed`` without ``event_settings``, which is ``events`` setting by setting: it
    differs only with it (a run whose ``events`` is accepted in an older form is too)."""
    if not changed or EVENT_SETTINGS not in changed:
        return changed
    return [k for k in changed if k != EVENT_SETTINGS] or None


def _without_settings(fingerprint: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fingerprint.items() if k != EVENT_SETTINGS}


def _shown(known: str) -> str:
    """A recorded fingerprint as a refusal shows it: without its settings' digests (the
    changed ones are named)."""
    try:
        was = orjson.loads(known)
    except orjson.JSONDecodeError:
        return known
    return _dumps(_without_settings(was)) if isinstance(was, dict) else known


def _named(key: str, known: str, recorded: str | None, config: Config) -> str:
    """How a refusal names a changed fingerprint key: ``events`` by the settings that
    changed, when the run recorded them one by one (``recorded``, or inside ``known`` as
    for a day; an earlier mp2amp did not)."""
    if key == "events":
        was: Any = None
        with suppress(orjson.JSONDecodeError):
            was = orjson.loads(recorded) if recorded is not None else \
                orjson.loads(known).get(EVENT_SETTINGS)  # a dict: "events" was compared
        if isinstance(was, dict):
            now = event_settings(config)
            both = was.keys() & now.keys()
            # a setting named only on one side: one a newer mp2amp added, or named anew
            differ = sorted(k for k in both if was[k] != now[k]) or sorted(
                k for k in was.keys() ^ now.keys())
            if differ:
                return "what decides which events go out: " + ", ".join(differ)
    return FINGERPRINT_NAMES.get(key, key)


def _unless_events_were(changed: list[str] | None, known: str,
                        *forms: Callable[[], str]) -> list[str] | None:
    """``changed`` without ``events`` when the run recorded ``events`` in one of ``forms``
    (an older mp2amp's digest of these same settings): it is recorded anew, in this one's."""
    if not changed or "events" not in changed:
        return changed
    try:
        was = orjson.loads(known)
    except orjson.JSONDecodeError:
        return changed
    if not isinstance(was, dict) or not any(was.get("events") == form() for form in forms):
        return changed
    return [k for k in changed if k != "events"] or None


def _unless_legacy_salt(changed: list[str] | None, known: str,
                        config: Config) -> list[str] | None:
    """The run recorded its hash salt's digest of before the KDF."""
    if config.privacy.hash_salt is None:
        return changed
    return _unless_events_were(changed, known, lambda: events_fingerprint(config, True))


def _unless_legacy_table(changed: list[str] | None, known: str,
                         config: Config) -> list[str] | None:
    """The run recorded a glob, remote or ``file://`` identity table by its location, or a
    folder by all its files (an mp2amp of before 2026-12-01): a change before this resume
    cannot be told."""
    if config.source.identity_table is None:
        return changed
    return _unless_events_were(changed, known,
                               lambda: events_fingerprint(config, False, listed=False),
                               lambda: events_fingerprint(config, True, listed=False))


def _stripped_salt(changed: list[str], known: str, config: Config) -> str:
    """Why ``events`` changed when the run started with the environment's hash salt as set
    now, blanks or a newline around it included, which this mp2amp strips: its hashes
    cannot be made again (a salt cannot end in whitespace any more)."""
    raw = os.environ.get(HASH_SALT_ENV)
    salt = config.privacy.hash_salt
    if "events" not in changed or salt is None or raw is None or raw == raw.strip() \
            or raw.strip() != salt.reveal():
        return ""
    try:
        was = orjson.loads(known)
    except orjson.JSONDecodeError:
        return ""
    unstripped = dataclasses.replace(
        config, privacy=dataclasses.replace(config.privacy, hash_salt=Secret(raw)))
    if not isinstance(was, dict) or was.get("events") not in (
            events_fingerprint(unstripped, True), events_fingerprint(unstripped)):
        return ""
    return (f"; the run started with {HASH_SALT_ENV} as set now but with the blanks or "
            "newline around it, which mp2amp now strips (a salt pasted with its newline), so "
            "its hashed values cannot be made again: start a new run in a new work folder, or "
            "finish this one with the mp2amp version that started it")


def _moved(ledger: Ledger, config: Config) -> str:
    was, now = ledger.get_meta(FOLDER_META), config_folder(config)
    if was is None or now is None or Path(was) == now:
        return ""
    return (f". The config file was in {was} when the run started and is in {now} now: a "
            "project folder moved whole resumes when its inputs are named relative to it "
            "(files = [\"events/*.jsonl\"]); name them so, or where they were")
