"""Loading ``mp2amp.toml``: a generic, type-driven parser that reports every problem at once.

It reads each section dataclass's field types (bool, int, float, str, Path, date,
Literal, tuples, nested sections, Secret, ``X | None``), so a new option needs no code
here. Field metadata: ``check`` (a function returning a problem or None), ``env`` (the
value comes only from that environment variable), ``env_or_file`` (the environment wins
over the file), ``location`` (strings that are local paths, resolved like ``Path`` fields,
or URLs, kept), ``internal`` (not read from the file). A blank text (a key's or a list
item's) is refused naming the key, with what to give (``sections.BLANK_HINTS``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal

from mp2amp.config.sections import (
    BLANK_HINTS,
    Config,
    Secret,
    configured_names,
    referenced_file_problems,
)
from mp2amp.errors import ConfigError
from mp2amp.url_scheme import lower_scheme

# --- loading ----------------------------------------------------------------------------


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    export_api: bool = True,
) -> Config:
    """Read ``path`` (or only defaults when None), apply ``overrides`` ({"section.key": value};
    None values are ignored, so unset flags can be passed as they are) and the environment.
    ``export_api``: the caller may read Mixpanel's Export API with it (``migrate``), so its
    credentials are checked; ``transform`` and ``status`` never do.

    Raises ConfigError with every problem found."""
    env = os.environ if env is None else env
    source = str(path) if path is not None else None
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        file = Path(path)
        try:
            # utf-8-sig: editors on Windows start the file with a BOM, which TOML refuses
            data = tomllib.loads(file.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise ConfigError([f"the config file {file} does not exist; create it (see "
                               "docs/examples/mp2amp.toml) or leave --config out"],
                              source=source) from None
        except OSError as exc:
            raise ConfigError([f"cannot read the config file: {exc.strerror or exc}"],
                              source=source) from None
        except UnicodeDecodeError as exc:
            before = exc.object[:exc.start]
            line = before.count(b"\n") + 1
            column = exc.start - (before.rfind(b"\n") + 1) + 1
            raise ConfigError([f"the config file is not UTF-8 text (line {line}, column "
                               f"{column}, byte {exc.start}); save it as UTF-8"],
                              source=source) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"not valid TOML: {exc}"], source=source) from None
        base = file.resolve().parent
    problems: list[str] = []
    raw = _apply_overrides(data, overrides or {}, problems)
    parser = _Parser(base=base, env=env, problems=problems)
    config = parser.section(Config, raw, "")
    if export_api:
        problems.extend(_service_account_problems(raw, parser.env))
    if problems:
        raise ConfigError(problems + _referenced_file_problems(raw, base, env), source=source)
    assert isinstance(config, Config)
    run = raw.get("run")
    if path is not None and not (isinstance(run, dict) and "workdir" in run):
        # the default, like a written ".mp2amp", is beside the config file: a resume from
        # another folder (cron, systemd) must find the same work folder, not start anew
        # (the folder the file is seen in: a symlinked config, e.g. a Kubernetes ConfigMap
        # whose target changes on each update, must not move the work folder)
        beside = Path(path).absolute().parent
        config = dataclasses.replace(
            config, run=dataclasses.replace(config.run, workdir=beside / config.run.workdir))
    return dataclasses.replace(config, path=Path(path) if path is not None else None)


def _service_account_problems(raw: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Only the Export API uses MIXPANEL_SERVICE_ACCOUNT: a run of files never reads it, so
    what the environment holds for other tools does not stop that run. Judged on the raw
    values, so that a problem elsewhere in ``[mixpanel]`` or ``[source]`` hides it not."""
    account = env.get("MIXPANEL_SERVICE_ACCOUNT", "").strip()
    source = raw.get("source")
    files = source.get("files") if isinstance(source, dict) else None
    if not account or ":" in account or files:
        return []
    return ["mixpanel.service_account: MIXPANEL_SERVICE_ACCOUNT must be 'username:secret'"]


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any],
                     problems: list[str]) -> dict[str, Any]:
    """Overrides land on a copy of the file's data; override paths resolve against the cwd."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if not key:
            problems.append(f"{dotted}: an override names section.key")
            continue
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            continue  # the section itself is wrong; the parser reports it
        if isinstance(value, Path):
            value = str(value.resolve())
        target[key] = value
    return merged


def _referenced_file_problems(raw: Mapping[str, Any], base: Path,
                              env: Mapping[str, str]) -> list[str]:
    """The tracking plan's and excluded-users file's problems, for a report that already
    holds the file's own: read wherever their keys name an existing file, even in a section
    that failed (whose parsed values are lost)."""
    parser = _Parser(base=base, env=env, problems=[])  # their key's problems are reported
    paths: list[Path | None] = []
    for section, key in (("transform", "plan"), ("privacy", "exclude_users")):
        table = raw.get(section)
        value = table.get(key) if isinstance(table, dict) else None
        path = parser.value(Path, value, f"{section}.{key}") if value is not None else None
        paths.append(path if isinstance(path, Path) and path.is_file() else None)
    privacy = raw.get("privacy")
    return referenced_file_problems(paths[0], paths[1], hashed=_names(privacy, "hash_properties"),
                                    configured=_configured_names(raw.get("transform")),
                                    dropped=_names(privacy, "drop_properties"))


def _names(section: Any, key: str) -> frozenset[str]:
    """The property names a (maybe failing) table's list ``key`` gives."""
    names = section.get(key) if isinstance(section, dict) else None
    return frozenset(n for n in names if isinstance(n, str)) if isinstance(names, list) \
        else frozenset()


def _configured_names(transform: Any) -> dict[str, str]:
    """The revenue and group property names a (maybe failing) [transform] table gives."""
    if not isinstance(transform, dict):
        return {}
    revenue, groups = transform.get("revenue"), transform.get("groups")
    return configured_names(revenue if isinstance(revenue, dict) else {},
                            groups if isinstance(groups, list) else ())


class _Invalid:
    """A value that failed; its problem is already recorded."""


_INVALID = _Invalid()
# "s3:/bucket/x": a storage URL with one slash (a local folder named "s3:" otherwise: the
# import files were written there, nothing to S3, exit 0); the schemes storage URLs use
_ONE_SLASH = re.compile(r"(s3a?|gs|gcs|az|abfss?|adl|https?|file|memory|hdfs|s?ftp):/(?!/)",
                        re.IGNORECASE)
_ITEM = object()  # the "default" of a list's item: removed from the list, not the file
_UNCHECKED = object()  # no blank check: a location's blank is a path's problem


@dataclass(frozen=True)
class _Partial:
    """A list with items that failed (their problems recorded): the items that parsed, so
    that the key's own check and its section's cross-checks report the rest at once, and
    each one's index in the list as written (a later problem names its own item)."""

    items: tuple[Any, ...]
    index: tuple[int, ...]

    @staticmethod
    def of(found: list[Any]) -> _Partial:
        kept = [(i, v) for i, v in enumerate(found) if v is not _INVALID]
        return _Partial(tuple(v for _, v in kept), tuple(i for i, _ in kept))


@dataclass
class _Parser:
    base: Path
    env: Mapping[str, str]
    problems: list[str]

    def section(self, cls: type[Any], raw: Any, prefix: str) -> Any:
        """An instance of the section ``cls`` from ``raw``, or _INVALID when a required key
        is missing or wrong (its problems recorded either way)."""
        name = prefix.rstrip(".")
        if not isinstance(raw, dict):
            self.problems.append(f"{name}: must be a table ([{name}] or {{...}}), "
                                 f"got {_kind(raw)}")
            raw = {}
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
        for key in raw:
            if key not in {f.name for f in fields}:
                self.problems.append(f"{prefix}{key}: unknown key{_hint(str(key), fields)}")
        values: dict[str, Any] = {}
        failed: list[str] = []
        for f in fields:
            path = f"{prefix}{f.name}"
            var = f.metadata.get("env")
            if var is not None:
                if f.name in raw:
                    self.problems.append(f"{path}: secrets are read only from the environment "
                                         f"({var}); remove it from the file")
                if self.env.get(var, "").strip():
                    # a key pasted with its newline (`cat key.txt` into an env file) was
                    # refused by Amplitude with no hint; no credential ends in whitespace
                    values[f.name] = Secret(self.env[var].strip())
                continue
            var = f.metadata.get("env_or_file")
            if var is not None and self.env.get(var, "").strip():  # blanks are no value
                # the environment wins over the file; stripped as the other secrets are: a
                # salt pasted with its newline would hash every value differently
                values[f.name] = Secret(self.env[var].strip())
                continue
            tp = hints[f.name]
            if f.name in raw:
                # a location's blank is a path's problem, reported by location()
                value = self.value(tp, raw[f.name], path, _UNCHECKED if f.metadata.get(
                    "location") else f.default)
            elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
                value = self.value(tp, {}, path)  # an absent section still reads its secrets
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                value = self._bad(path, "missing (required)")
            else:
                continue
            if value is _INVALID:
                failed.append(f.name)
                continue
            if f.metadata.get("location") and value is not None:
                value = self.location(value, path)
                if value is _INVALID:
                    failed.append(f.name)
                    continue
            if isinstance(value, _Partial):
                value = value.items
            check = f.metadata.get("check")
            problem = check(value) if check is not None and value is not None else None
            if problem:
                self.problems.append(f"{path}: {problem}")
                if not isinstance(value, tuple):  # a list is still judged by the cross-checks
                    failed.append(f.name)
                    continue
            values[f.name] = value
        try:
            result = cls(**values)
        except TypeError:  # a required field failed: its problem is recorded
            return _INVALID
        if hasattr(result, "problems"):
            # Cross-field checks on a field that already failed would judge its default.
            self.problems.extend(
                f"{prefix}{p}" for p in result.problems()
                if not any(name in p.partition(":")[0] for name in failed))
        return result

    def blank(self, tp: Any, raw: Any, path: str, default: Any) -> bool:
        """Whether a text value (a key's, or a list's item's) is blank, its problem
        recorded: "" would be a silent default (``price = ""`` reads no revenue) or fail
        a check that does not say what is wrong (``timezone = ""``)."""
        if default is _UNCHECKED or not isinstance(raw, str) or raw.strip():
            return False
        key = re.sub(r"\[\d+\]", "", path)
        what, unset = BLANK_HINTS.get(key, ("a value", None))
        if typing.get_origin(tp) is Literal:
            what = "one of " + ", ".join(map(str, typing.get_args(tp)))
        elif tp is date:
            what = "a date like 2024-01-31"
        elif tp is not str:
            return False  # a secret has its own problem; other types say "must be a ..."
        if default is _ITEM:
            instead = "give one, or remove it from the list"
        elif default is dataclasses.MISSING:
            instead = "give one"
        elif default is None:
            instead = f"give one, or remove the key{' ' + unset if unset else ''}"
        else:
            instead = f"give one, or remove the key for the default, {default}"
        self.problems.append(f"{path}: must be {what}, got a blank value {raw!r}; {instead}")
        return True

    def value(self, tp: Any, raw: Any, path: str, default: Any = _UNCHECKED) -> Any:
        """``raw`` as ``tp``, or _INVALID (its problem recorded); ``default``: the key's, to
        refuse a blank text naming it (_UNCHECKED: not checked, a location's)."""
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            return self.value(inner[0], raw, path, default) if len(inner) == 1 else raw
        if origin is not tuple and self.blank(tp, raw, path, default):
            return _INVALID
        if origin is Literal:
            if raw in args:
                return raw
            return self._bad(path, f"{raw!r} is not one of {', '.join(map(str, args))}")
        if origin is tuple:
            if not isinstance(raw, list):
                return self._bad(path, f"must be a list, got {_kind(raw)}")
            items = [self.value(args[0], item, f"{path}[{i}]",
                                _ITEM if default is not _UNCHECKED else _UNCHECKED)
                     for i, item in enumerate(raw)]
            return tuple(items) if _INVALID not in items else _Partial.of(items)
        if origin is dict:
            if args[1] is Any:  # passed through as written (fsspec storage options)
                return dict(raw) if isinstance(raw, dict) else self._bad(
                    path, f"must be a table, got {_kind(raw)}")
            if not isinstance(raw, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
                return self._bad(path, f"must be a table of strings, got {_kind(raw)}")
            return dict(raw)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            before = len(self.problems)
            result = self.section(tp, raw, f"{path}.")
            return _INVALID if len(self.problems) != before else result
        if tp is bool:
            return raw if isinstance(raw, bool) else self._bad(
                path, f"must be true or false, got {_kind(raw)}")
        if tp is int:
            return raw if isinstance(raw, int) and not isinstance(raw, bool) else self._bad(
                path, f"must be an integer, got {_kind(raw)}")
        if tp is float:
            ok = isinstance(raw, int | float) and not isinstance(raw, bool)
            return float(raw) if ok else self._bad(path, f"must be a number, got {_kind(raw)}")
        if tp is str:
            return raw if isinstance(raw, str) else self._bad(
                path, f"must be a string, got {_kind(raw)}")
        if tp is Path:
            if not isinstance(raw, str) or not raw.strip():
                return self._bad(path, f"must be a path (a string), got {_kind(raw)}")
            home = self._home(raw, path)
            return self.base / home if isinstance(home, Path) else home
        if tp is date:
            if isinstance(raw, date) and not hasattr(raw, "hour"):
                return raw
            if isinstance(raw, str):
                try:
                    return date.fromisoformat(raw)
                except ValueError:
                    pass
            if isinstance(raw, datetime | time):  # TOML's own: shown as written, not repr
                return self._bad(path, f"must be a date like 2024-01-31 (the day alone), got "
                                 f"{raw.isoformat()}")
            return self._bad(path, f"must be a date like 2024-01-31, got {raw!r}")
        if tp is Secret:  # stripped as the environment's: a salt of blanks is none
            return Secret(raw.strip()) if isinstance(raw, str) and raw.strip() else self._bad(
                path, "must be a non-empty string")
        raise TypeError(f"config field {path} has a type the loader does not know: {tp}")

    def location(self, value: Any, path: str) -> Any:
        """Local paths in a location field resolved against the file's folder; URLs kept.
        A list's items that fail are left out of a ``_Partial``."""
        if isinstance(value, tuple):
            found = [self.location(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return tuple(found) if _INVALID not in found else _Partial.of(found)
        if isinstance(value, _Partial):  # the kept items, named by their index as written
            found = [self.location(v, f"{path}[{i}]")
                     for i, v in zip(value.index, value.items, strict=True)]
            kept = [(i, v) for i, v in zip(value.index, found, strict=True) if v is not _INVALID]
            return _Partial(tuple(v for _, v in kept), tuple(i for i, _ in kept))
        if isinstance(value, str) and not value.strip():
            # "" would be the config file's own folder: output_dir = "" wrote the import
            # files there, and sent nothing to Amplitude
            return self._bad(path, f"must be a path or URL, got {_kind(value)}; write \".\" "
                                   "for the config file's own folder")
        if isinstance(value, str) and "://" not in value:
            if (slash := _ONE_SLASH.match(value)) is not None:
                return self._bad(path, f"{value!r} is a URL missing a slash: write "
                                       f"{slash.group(1)}://{value[slash.end():]} (or "
                                       f"./{value} for a local folder of that name)")
            home = self._home(value, path)
            return str(self.base / home) if isinstance(home, Path) else home
        return lower_scheme(value) if isinstance(value, str) else value

    def _home(self, raw: str, path: str) -> Path | _Invalid:
        """``~`` and ``~user`` expanded; a user this machine does not know (a config from
        another server) is a problem of the key, not a traceback."""
        try:
            return Path(raw).expanduser()
        except RuntimeError as exc:
            return self._bad(path, f"{raw!r}: {exc} (no such user here?); give the path "
                                   "without ~")

    def _bad(self, path: str, problem: str) -> _Invalid:
        self.problems.append(f"{path}: {problem}")
        return _INVALID


def _hint(key: str, fields: list[dataclasses.Field[Any]]) -> str:
    """What an unknown key may have meant: a key of the file, never one read only from the
    environment (a secret), which the hint would send back into the file. Matched without
    case and against the secrets' variable names too: ``AMPLITUDE_API_KEY = "..."``
    pasted from an env file is a secret in the file, and must be told so."""
    known = sorted(f.name for f in fields if not f.metadata.get("env"))
    secrets = {f.name: f.metadata["env"] for f in fields if f.metadata.get("env")}
    either = {f.metadata["env_or_file"].lower(): f for f in fields
              if f.metadata.get("env_or_file")}
    # every spelling a key may have meant, lowercased, to the field it names
    names = {n.lower(): n for n in known + sorted(secrets)}
    names |= {var.lower(): n for n, var in secrets.items()}
    names |= {var: f.name for var, f in either.items()}
    lowered = key.lower()
    close = [lowered] if lowered in names else difflib.get_close_matches(lowered, names, n=1)
    if not close:
        return f" (known: {', '.join(known)})"
    name = names[close[0]]
    if name in secrets:
        return (f"; secrets are read only from the environment: set {secrets[name]} "
                "there and remove this key from the file")
    if close[0] in either:  # the variable's name: either place holds it, under its own name
        return (f"; {either[close[0]].metadata['env_or_file']} is an environment variable: "
                f"set it there, or write the key as {name!r} in this file")
    return f"; did you mean {name!r}?"


def _kind(value: Any) -> str:
    names = {dict: "a table", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number"}
    label = names.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{label} {text if len(text) <= 40 else text[:37] + '...'}"
