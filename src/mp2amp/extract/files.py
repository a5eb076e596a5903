"""Read Mixpanel records from files: local paths and globs, ``s3://`` and ``gs://``.

Formats: JSON lines (streamed), a top-level JSON array (streamed element by element),
pretty-printed objects one after another (``jq .`` output), any of them gzip-compressed (detected by content, not by name, because pipeline blobs
named ``.gz`` may arrive already decompressed). A directory is read as a Data Pipelines
tree (see ``pipelines``). Every record comes out as a ``SourceRecord``; unusable lines
become rejections, so nothing is dropped silently. A path that cannot be read at all
raises ``InputError`` naming it, before any record of it is yielded.
"""

from __future__ import annotations

import glob
import itertools
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from mp2amp.errors import InputError, Rejection
from mp2amp.extract.concatenated import is_pretty, iter_concatenated
from mp2amp.extract.gzstream import (
    GZIP_CHUNK,
    GZIP_ERRORS,
    GZIP_MAGIC,
    GuardedReader,
    GzipStream,
)
from mp2amp.extract.jsonarray import iter_array
from mp2amp.extract.lines import parse_lines, split_lines
from mp2amp.extract.localtree import (
    broken_link,
    layout_path,
    layout_paths,
    list_tree,
)
from mp2amp.extract.pipelines import (
    is_pipeline_row,
    legacy_slice,
    literal_part,
    refuse_other_table,
    to_export_shape,
)
from mp2amp.extract.remote_glob import Listings, remote_glob
from mp2amp.extract.selection import (
    EmptyFolder,
    Slices,
    glob_inputs,
    only_empty,
    selected,
)
from mp2amp.models import UTC_TIME_MARK, SourceRecord
from mp2amp.remote_fs import gcs_emulator
from mp2amp.url_scheme import lower_scheme

CHUNK = 1 << 20
LINE_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
REMOTE_PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
                   "gcs": ("gcsfs", "gcs")}

StorageOptions = Mapping[str, Any]

_JSON_ONLY = ("export the events as JSON lines (mp2amp reads Data Pipelines in the JSON "
              "format, and Raw Export JSON)")
# Formats that are not JSON text, by their first bytes, with what to do about each: read
# line by line they only became thousands of rejected "lines" of binary garbage.
_FOREIGN: tuple[tuple[bytes, str, str], ...] = (
    (b"PK\x03\x04", "a zip archive", "unpack it and name the files inside"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive", "unpack it and name the files inside"),
    (b"BZh", "bzip2-compressed", "decompress it (bunzip2) or recompress it with gzip"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it (unxz) or recompress it with gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed",
     "decompress it (unzstd) or recompress it with gzip"),
    (b"PAR1", "a Parquet file", _JSON_ONLY),
    (b"Obj\x01", "an Avro file", _JSON_ONLY),
    (b"ORC", "an ORC file", _JSON_ONLY),
    (b"\xff\xfe", "UTF-16 text", "convert it to UTF-8"),
    (b"\xfe\xff", "UTF-16 text", "convert it to UTF-8"),
)
SNIFF_BYTES = 8


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file to read: ``url`` is what records name as their source."""

    url: str
    fs: Any = None  # an fsspec filesystem for remote files, None for local ones
    size: int | None = None  # a remote object's, from its listing: what is read of it
    version: str | None = None  # a remote object's generation or ETag, from its listing
    # a remote object's content hash from its listing (GCS: md5Hash or crc32c, S3: ETag):
    # the same bytes written again keep it, where a GCS generation changes
    checksum: str | None = None

    @property
    def time_is_utc(self) -> bool:
        """A legacy raw pipeline's file (recognised by its path, so also when named alone):
        Raw Export records, but in UTC whatever the project (reference §1.6)."""
        if self.fs is not None:
            return legacy_slice(self.url) is not None
        # the layout where a linked folder leads (in/raw -> bucket/prefix/123), or as named
        return any(legacy_slice(path) is not None for path in (
            layout_path(self.url), os.path.abspath(self.url).replace(os.sep, "/")))

    def open(self) -> BinaryIO:
        if self.fs is None:
            return open(self.url, "rb")
        # the size the listing gave, for gcsfs only: its listing cache made a key holding
        # '//' an empty directory entry when opened by name; given a size, s3fs drops its
        # ETag check (an object rewritten while read came out as a mix of two versions)
        gcs = self.size is not None and self.url.startswith(("gs://", "gcs://"))
        sized = {"size": self.size} if gcs and "//" in self.url.split("://", 1)[1] else {}
        opened: BinaryIO = self.fs.open(self.url, "rb", **sized)
        return opened


def iter_records(
    paths: Sequence[str], *, storage_options: StorageOptions | None = None
) -> Iterator[SourceRecord]:
    """Every record of every file named by ``paths``, in order.

    ``paths`` may mix local files, directories, globs and ``s3://``/``gs://`` URLs (globs
    and directories too). ``storage_options`` go to the fsspec filesystem of remote paths,
    e.g. ``{"endpoint_url": "http://127.0.0.1:9000", "key": ..., "secret": ...}`` for a
    local S3 server. Files matched twice are read once.
    """
    for source in expand_paths(paths, storage_options=storage_options):
        yield from iter_file(source)


class Filesystems:
    """One fsspec filesystem per protocol for one set of storage options, built when first
    needed: a client (session, credentials) takes ~0.2 s, so the objects share it."""

    def __init__(self, options: StorageOptions | None) -> None:
        self.options, self._built = options or {}, dict[str, Any]()

    def get(self, protocol: str) -> Any:
        if protocol not in self._built:
            self._built[protocol] = _filesystem(protocol, self.options)
        return self._built[protocol]


def expand_paths(
    paths: Sequence[str], *, storage_options: StorageOptions | None = None,
    every_file: bool = False, dedupe: bool = True,
) -> list[SourceFile]:
    """The files ``paths`` name, globs and directories expanded; ``InputError`` if any is
    missing, unreadable or in a foreign format (all paths are checked before anything is
    read).

    A directory gives its event files (``pipelines.select_event_files``); with
    ``every_file`` (a table's folder of part files) every file but markers. Without
    ``dedupe``, every path named keeps its own entry when another names the same real file
    (a resume's pending windows, planned as distinct files: a link repointed since, or a
    file replaced by a link to an identical one, must not leave a window without its file).
    """
    if isinstance(paths, str):
        paths = [paths]
    seen: set[str] = set()
    out: list[SourceFile] = []
    remote = Filesystems(storage_options)
    # the legacy slices of all the paths' folders, judged together (a day's hours may be
    # named one by one), per place: a local layout and a bucket's are read apart
    slices: dict[str | None, Slices] = {}
    for path in paths:
        path = lower_scheme(path)
        protocol = _protocol(path)
        if protocol is None:
            check = slices.setdefault(None, Slices(str, layout_paths()))
            found = _expand_local(path.removeprefix("file://"), every_file, check)
        else:
            fs = remote.get(protocol)
            check = slices.setdefault(protocol, Slices(fs.unstrip_protocol, str))
            found = _expand_remote(path, fs, every_file, check)
        for item in found:
            # one file under two names (a symlink, dir/./a, a '**' glob through a link
            # back up the tree) is read once, under the first
            key = item.url if item.fs is not None or not dedupe else os.path.realpath(item.url)
            if key not in seen:
                seen.add(key)
                out.append(item)
    for check in slices.values():
        check.warn()
    return out


def iter_file(source: SourceFile) -> Iterator[SourceRecord]:
    """Records of one file (format sniffed from its content)."""
    with ExitStack() as stack:
        try:
            raw = stack.enter_context(source.open())
            head = raw.read(SNIFF_BYTES)
            raw.seek(0)
        except Exception as exc:  # any backend's failure means the same: cannot read it
            raise InputError(f"cannot read {source.url}: {exc}; check the path and "
                             "permissions and run again") from exc
        check_format(source.url, head)
        if not head and source.url.lower().endswith(".gz"):
            # never valid gzip (even of nothing): a download or upload that failed; a
            # truncated_file rejection stops the run as a cut .gz does
            yield SourceRecord(source.url, 1, None, Rejection(
                "truncated_file", f"{source.url} is empty, but a .gz file never is (a "
                "download or upload that failed?); the file could not be read: restore "
                "the file and run again", source=source.url, line=1))
            return
        head = head[:2]
        stream: BinaryIO = raw
        chunk = CHUNK
        if head == GZIP_MAGIC:
            chunk = GZIP_CHUNK
            stream = cast(BinaryIO, GzipStream(raw))
        yield from _iter_stream(source.url, stream, chunk, source.time_is_utc)


def check_format(url: str, head: bytes) -> None:
    """``InputError`` when a file's first bytes say it is not JSON text nor gzip."""
    if head.startswith(GZIP_MAGIC):
        return
    found = next(((what, todo) for magic, what, todo in _FOREIGN if head.startswith(magic)),
                 None)
    if found is None and b"\0" in head[:4]:  # JSON text has no NUL; UTF-16/32 has
        found = ("binary or UTF-16/32 text (NUL bytes)", "convert it to UTF-8 JSON lines")
    if found is not None:
        raise InputError(f"{url} is {found[0]}, not JSON lines or a JSON array (plain or "
                         f"gzip): {found[1]}, or leave it out of the inputs, and run again")


def _where(records: int, line: int) -> str:
    # a pretty-printed array's or object stream's records start on lines further on
    return f"record {records}" if records == line else f"record {records} (line {line})"


def _iter_stream(url: str, stream: BinaryIO, chunk: int = CHUNK,
                 utc: bool = False) -> Iterator[SourceRecord]:
    count = 0  # the last record's line (a rejection after it takes the next)
    records_read = 0
    try:
        guarded = GuardedReader(stream)
        read = guarded.read
        first = read(chunk)
        if isinstance(stream, GzipStream):  # what the gzip holds must be JSON text too
            if first.startswith(GZIP_MAGIC):
                raise InputError(f"{url} is gzip inside gzip (compressed twice): decompress "
                                 "it once (gunzip) and run again")
            check_format(f"{url} (decompressed)", first[:SNIFF_BYTES])
        if first.startswith(b"\xef\xbb\xbf"):
            first = first[3:]
        start = first.lstrip()
        # a .jsonl whose first line is "[" alone is a pretty-printed array (no JSON line
        # is "["): read line by line it was one rejection per line
        is_array = start[:1] == b"[" and (not url.lower().endswith(LINE_SUFFIXES)
                                          or start.split(b"\n", 1)[0].strip() == b"[")
        if is_array:
            records = iter_array(url, guarded, first)
        elif is_pretty(first):
            records = iter_concatenated(url, guarded, first)
        else:
            chunks = itertools.chain([first], iter(lambda: read(chunk), b""))
            records = parse_lines(url, split_lines(chunks))
        for rec in records:
            count = rec.line
            records_read += 1
            yield _normalized(rec, utc)
    except GZIP_ERRORS as exc:
        # A damaged compressed file: what was read is kept, the loss is reported as a
        # rejection so that the counts show it.
        line = count + 1
        if any(word in str(exc).lower() for word in _CHECKSUM_WORDS):
            # the trailer's CRC or length: all of it was read, but not what was written
            what = (f"{url} fails its gzip checksum after {_where(records_read, count)} "
                    f"({exc}): it was read to its end, but the bytes are not the ones "
                    "written (a damaged copy), so some records may be altered")
        else:
            what = (f"{url} is damaged after {_where(records_read, count)} ({exc}); the "
                    "rest of the file could not be read")
        rej = Rejection("truncated_file", f"{what}: restore the file and run again",
                        source=url, line=line)
        yield SourceRecord(url, line, None, rej)
    except OSError as exc:
        raise InputError(f"reading {url} failed after {_where(records_read, count)}: {exc}; "
                         "check the file and run again") from exc


# how zlib ("incorrect data check", "incorrect length check"), ISA-L ("Incorrect
# checksum", "Incorrect length") and gzip ("CRC check failed") name a trailer mismatch
_CHECKSUM_WORDS = ("checksum", "data check", "length check", "incorrect length", "crc check")


def _normalized(rec: SourceRecord, utc: bool = False) -> SourceRecord:
    """Data Pipelines rows become Raw Export records; everything else passes through,
    marked as UTC when ``utc`` (a legacy raw pipeline's file)."""
    if rec.record is None:
        return rec
    if not is_pipeline_row(rec.record):
        if utc:
            rec.record[UTC_TIME_MARK] = True
            rec.raw = None  # the line no longer holds the whole record: staged from it
        return rec
    shaped = to_export_shape(rec.record)
    if isinstance(shaped, dict):
        return SourceRecord(rec.source, rec.line, shaped, None)
    rej = Rejection("bad_pipeline_row", f"{rec.source} line {rec.line}: {shaped}",
                    field="properties" if "properties" in shaped else "time",
                    source=rec.source, line=rec.line, record=rec.record)
    return SourceRecord(rec.source, rec.line, None, rej)


def _protocol(path: str) -> str | None:
    if "://" not in path:
        return None
    protocol = path.split("://", 1)[0].lower()
    return None if protocol == "file" else protocol


def _has_magic(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _expand_local(path: str, every_file: bool = False, slices: Slices | None = None,
                  ) -> list[SourceFile]:
    if _has_magic(path) and not os.path.lexists(path):  # 'day [1].jsonl' is a name
        if not every_file:
            refuse_other_table(os.path.abspath(literal_part(path)), True, path)
        found = sorted(glob.glob(path, recursive=True))
        if not found:
            raise InputError(f"no file matches {path}; check the pattern and run again")
        matches = glob_inputs(path, found, every_file)
    else:
        matches, found = [path], []
    out: list[SourceFile] = []
    quiet: list[str] = []  # folders a glob matched without input files (see EmptyFolder)
    own = slices is None  # else the caller warns, once all its paths are expanded
    slices = Slices(str, layout_paths()) if slices is None else slices
    for match in matches:
        _check_name(match)
        if not every_file and match is path and os.path.exists(match):  # named, not matched
            refuse_other_table(os.path.abspath(match), os.path.isdir(match), match)
        if os.path.isdir(match):
            try:
                tree = _local_tree(match, every_file, slices)
            except EmptyFolder:
                if match is path:
                    raise
                quiet.append(match)
                continue
            files = [os.path.join(match, rel) for rel in tree]
            for file in files:
                _check_name(file)
                _sniff_local(file)
            out.extend(SourceFile(file) for file in files)
        elif os.path.isfile(match):
            if not os.access(match, os.R_OK):
                raise InputError(f"{match} is not readable (permission denied); "
                                 "fix its permissions and run again")
            _sniff_local(match)
            out.append(SourceFile(match))
        elif os.path.islink(match) and not os.path.exists(match):
            raise broken_link(match)  # an unmounted share, a moved target, a loop
        elif os.path.lexists(match):  # a link to one too: /dev/stdin, say
            raise _not_regular(match)
        elif not match.strip():  # "" from an unset variable: the current folder was never meant
            raise InputError(f"an input path is blank ({match!r}); give the file or folder "
                             "(\".\" for the current folder) and run again")
        else:
            raise InputError(f"{match} does not exist; check the path and run again")
    if not out and quiet:
        raise only_empty(path, every_file, quiet)
    if found and not every_file:  # a glob's files, matched themselves (``day/*/*``)
        slices.add_matched([m for m in matches if os.path.isfile(m)], found)
    if own:
        slices.warn()
    return out


def _check_name(path: str) -> None:
    """A file name that is not UTF-8 (Linux allows any bytes) cannot be named in the
    ledger, the dead letters or JSON: said before anything is read."""
    try:
        path.encode()
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise InputError(f"the file name {shown!r} is not UTF-8; rename it (e.g. with "
                         "convmv) and run again") from None


def _sniff_local(path: str) -> None:
    """A local file in a foreign format stops the run before anything is read or sent."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return  # reported, with the path, when the file is read
    check_format(path, head)


def _local_tree(root: str, every_file: bool = False, slices: Slices | None = None,
                ) -> list[str]:
    # linked folders too (an archive mounted elsewhere, linked in), each real folder once
    # and under its own name where the folder holds it (localtree)
    rels = list_tree(root, every_file)
    files = selected(os.path.abspath(root).replace(os.sep, "/"), rels, every_file,
                     f"directory {root}", local=root, slices=slices)
    for rel in files:
        _refuse_special(os.path.join(root, rel), root)
    return files


def _refuse_special(path: str, folder: str | None = None) -> None:
    """``InputError`` for a pipe, socket or device: opened to be sniffed, a pipe waited for
    a writer (the run hung), and such a file cannot be read again on --resume. A path
    that cannot be looked up (a dangling link) is named when it is read."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise _not_regular(path, folder)


def _not_regular(path: str, folder: str | None = None) -> InputError:
    inside = "" if folder is None else f", inside the input folder {folder}"
    where = "move it out of the folder" if folder is not None else "leave it out of the inputs"
    return InputError(f"{path}{inside} is not a regular file (a device, socket or pipe: it "
                      "is read twice, and more than once on --resume); save it to a file, or "
                      f"{where}, and run again")


def _filesystem(protocol: str, options: StorageOptions) -> Any:
    import fsspec

    if protocol in ("gs", "gcs"):
        options = _raw_gcs_reads(options)
    try:
        if protocol in ("gs", "gcs") and gcs_emulator(options):
            # gcsfs's default class asks a gRPC API for the bucket's layout before each
            # open; an emulator serves none, so every file waited out 60 s of retries. The
            # plain class speaks only the JSON API, which is all that reading needs.
            from gcsfs.core import GCSFileSystem

            return GCSFileSystem(skip_instance_cache=True, **dict(options))
        # a fresh instance per run: fsspec's cached one keeps its listings (with ETags), so
        # an object replaced since (a cut .gz restored before --resume) failed to open
        return fsspec.filesystem(protocol, skip_instance_cache=True, **dict(options))
    except ImportError as exc:
        package, extra = REMOTE_PACKAGES.get(protocol, (f"an fsspec backend for {protocol}",
                                                        protocol))
        raise InputError(f"reading {protocol}:// paths needs the {package} package: "
                         f"pip install 'mp2amp[{extra}]' (or pip install {package})") from exc
    except ValueError as exc:
        raise InputError(f"{protocol}:// is not a supported storage protocol ({exc})") from exc


def _raw_gcs_reads(options: StorageOptions) -> StorageOptions:
    """An object stored with Content-Encoding: gzip (gsutil cp -Z) read as stored (gzip):
    aiohttp decompressed ranges GCS applies to the stored bytes (empty or failed reads)."""
    session = dict(options.get("session_kwargs") or {})
    session.setdefault("auto_decompress", False)
    return {**options, "session_kwargs": session}


def _expand_remote(path: str, fs: Any, every_file: bool = False,
                   slices: Slices | None = None) -> list[SourceFile]:
    try:
        globbed = _has_magic(path) and not fs.exists(path)  # a key holding '[' is a name
        if globbed:
            if not every_file:
                refuse_other_table(literal_part(fs._strip_protocol(path)), True, path)
            found = remote_glob(fs, path)
            if not found:
                raise InputError(f"no object matches {path}; check the pattern and run again")
            kept = glob_inputs(fs._strip_protocol(path), list(found), every_file, path,
                               fs.unstrip_protocol,
                               lambda m: found[m].get("type") == "directory")
            matches = {m: found[m] for m in kept}
        else:
            matches = {path: _remote_info(fs, path)}
            if not every_file:
                refuse_other_table(fs._strip_protocol(path),
                                    matches[path].get("type") == "directory", path)
        out: dict[str, SourceFile] = {}  # by URL: a '**' glob matches files and their folders
        own = slices is None  # else the caller warns, once all its paths are expanded
        listings, quiet = Listings(fs), []
        slices = Slices(fs.unstrip_protocol, str) if slices is None else slices
        for match, info in sorted(matches.items()):
            if info.get("type") == "directory":
                root = fs._strip_protocol(match).rstrip("/")
                listing = listings.below(root)
                try:
                    files = selected(root, list(listing), every_file, fs.unstrip_protocol(
                        root) if globbed else path, fs.unstrip_protocol, slices=slices)
                except EmptyFolder:
                    if not globbed:  # a folder named: it was meant to hold events
                        raise
                    quiet.append(fs.unstrip_protocol(root))
                    continue
                for rel in files:
                    url = fs.unstrip_protocol(f"{root}/{rel}")
                    out.setdefault(url, _remote_file(url, fs, listing[rel]))
            else:
                url = fs.unstrip_protocol(fs._strip_protocol(match))
                out.setdefault(url, _remote_file(url, fs, info))
        if not out:
            raise only_empty(path, every_file, quiet)
        if globbed and not every_file:  # a glob's files, matched themselves (``day/*/*``)
            slices.add_matched([fs._strip_protocol(m).rstrip("/") for m, info in matches.items()
                                if info.get("type") != "directory"],
                               [fs._strip_protocol(m).rstrip("/") for m in found])
        if own:
            slices.warn()
        _sniff_remote(fs, list(out.values()))
        return list(out.values())
    except InputError:
        raise
    except Exception as exc:  # credentials, network, permissions: the path is unreadable
        raise InputError(f"cannot list or read {path}: {type(exc).__name__}: {exc}; check "
                         "the URL, credentials and storage options and run again") from exc


def _remote_info(fs: Any, path: str) -> dict[str, Any]:
    """Only a FileNotFoundError means missing (isdir/isfile said so of a 403 too)."""
    try:
        info: dict[str, Any] = fs.info(path)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; check the URL and run again") from None
    return info


def _remote_file(url: str, fs: Any, info: Mapping[str, Any]) -> SourceFile:
    size, version = info.get("size"), info.get("generation") or info.get("ETag")
    checksum = info.get("md5Hash") or info.get("crc32c") or info.get("ETag")
    return SourceFile(url, fs, size if isinstance(size, int) else None,
                      None if version is None else str(version),
                      None if checksum is None else str(checksum))


def _sniff_remote(fs: Any, files: list[SourceFile]) -> None:
    """A foreign format stops the run before it starts, as a local file's does (after,
    the advice to leave it out was refused): every object's first bytes, concurrently."""
    wanted = [f for f in files if f.size]  # empty or of unknown size: checked when read
    try:
        heads = fs.cat_ranges([fs._strip_protocol(f.url) for f in wanted], [0] * len(wanted),
                              [min(SNIFF_BYTES, f.size or 0) for f in wanted],
                              on_error="return")
    except Exception:  # an object that cannot be read is reported when read
        return
    for source, head in zip(wanted, heads, strict=True):
        if isinstance(head, bytes):
            check_format(source.url, head)


def remote_objects(urls: Sequence[str], filesystems: Filesystems
                   ) -> dict[str, SourceFile | Exception]:
    """Each object ``urls`` name as it is now (its size and version), or what looking it up
    raised (FileNotFoundError: gone); looked up concurrently, without listing."""
    out: dict[str, SourceFile | Exception] = {}
    for protocol, group in itertools.groupby(sorted(urls), key=_protocol):
        fs, names = filesystems.get(protocol or "file"), list(group)
        for url, info in zip(names, _infos(fs, names), strict=True):
            out[url] = (info if isinstance(info, Exception)
                        else FileNotFoundError(url) if info.get("type") == "directory"
                        else _remote_file(url, fs, info))
    return out


def _infos(fs: Any, paths: list[str]) -> list[dict[str, Any] | Exception]:
    if not getattr(fs, "async_impl", False):  # one at a time (the caller's loop is running)
        return [_info_or_error(fs, path) for path in paths]
    import asyncio

    from fsspec.asyn import sync

    async def every() -> list[Any]:
        limit = asyncio.Semaphore(32)

        async def one(path: str) -> Any:
            async with limit:
                return await fs._info(path)
        return await asyncio.gather(*map(one, paths), return_exceptions=True)
    return [f if isinstance(f, dict | Exception) else RuntimeError(f)
            for f in sync(fs.loop, every)]


def _info_or_error(fs: Any, path: str) -> dict[str, Any] | Exception:
    try:
        info: dict[str, Any] = fs.info(path)
    except Exception as exc:  # handed to the caller, as the concurrent look-up does
        return exc
    return info
