"""``mp2amp migrate`` and ``mp2amp status``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mp2amp.cli.output import (
    StdoutConsole,
    cli_errors,
    console,
    err_console,
    print_json,
    printing_result,
)

if TYPE_CHECKING:
    from mp2amp.pipeline.accounting import WindowCounts
    from mp2amp.pipeline.result import MigrateResult
    from mp2amp.pipeline.status import StatusResult

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="mp2amp.toml (default: ./mp2amp.toml when it exists).",
    show_default=False)]
WorkdirOpt = Annotated[Path | None, typer.Option(
    "--workdir", help="Work folder with the ledger (overrides \\[run] workdir).",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


# the options that override a config key: a problem with the value names the option
_OPTION_OF = {"run.workdir": "--workdir", "run.concurrency": "--concurrency",
              "transform.plan": "--plan"}


def load_cli_config(config: Path | None, overrides: dict[str, Any],
                    export_api: bool = False) -> Any:
    """The config of ``config`` (or ./mp2amp.toml) with the command's options laid over it;
    a problem with an option's value names the option, not the file that lacks the key.
    ``export_api``: the command may read Mixpanel's Export API (``migrate``)."""
    from mp2amp.config import DEFAULT_FILE, load_config
    from mp2amp.errors import ConfigError

    if config is None and Path(DEFAULT_FILE).is_file():
        config = Path(DEFAULT_FILE)
    try:
        return load_config(config, overrides, export_api=export_api)
    except ConfigError as exc:
        given = [key for key, value in overrides.items() if value is not None]
        if not any(p.startswith(f"{key}:") for p in exc.problems for key in given):
            raise
        # the value came from an option, not from the file the message would blame
        raise ConfigError([next((f"{_OPTION_OF.get(key, key)} ({p})" for key in given
                                 if p.startswith(f"{key}:")), p) for p in exc.problems],
                          source=exc.source) from None


def _may_hide_workdir(problem: str) -> bool:
    """A config problem that may be a work folder not where the loader looks: ``run = "/x"``,
    ``[[run]]``, a misspelt key in ``[run]`` (``work_dir``), or an unknown section or key at
    the top (``[runs]``, ``[Run]``, ``workdir = ...``)."""
    key, _, said = problem.partition(": ")
    return key == "run" or (said.startswith("unknown key")
                            and (key.startswith("run.") or "." not in key))


def _status_workdir(config: Path | None, workdir: Path | None) -> Path:
    """The work folder ``status`` reads. It needs nothing else from the config, so a
    problem that only ``migrate`` cares about (a salt kept in the environment of the
    migration's shell, a plan file elsewhere) does not refuse it: the whole config is
    checked first, and when that fails only ``[run] workdir`` is read."""
    from mp2amp.config import DEFAULT_FILE, RunConfig
    from mp2amp.errors import ConfigError

    try:
        # absolute, as the fallback below gives it: the ledger named in the result is the
        # same whichever way the folder was found
        return Path(load_cli_config(config, {"run.workdir": workdir}).run.workdir).absolute()
    except ConfigError as problem:
        if workdir is not None:
            return workdir.resolve()
        path = config if config is not None else Path(DEFAULT_FILE)
        if config is None and not path.exists():  # the problem is the environment's alone
            return path.absolute().parent / RunConfig().workdir
        try:
            import tomllib

            run = tomllib.loads(path.read_text(encoding="utf-8-sig")).get("run", {})
        except (OSError, ValueError):
            raise problem from None  # the file itself is unreadable: that message says why
        value = run.get("workdir") if isinstance(run, dict) else None
        if value is None and not any(map(_may_hide_workdir, problem.problems)):
            return path.absolute().parent / RunConfig().workdir  # the default, beside the file
        if not isinstance(value, str) or not value.strip():
            raise problem from None  # `workdir = 5` or "": the config's message names it
        try:
            given = Path(value).expanduser()  # "~/mig", as the loader reads paths
        except RuntimeError:
            raise problem from None  # "~nosuchuser": the config's message names it
        # relative to the config file's folder, as the loader reads it
        return given if given.is_absolute() else path.resolve().parent / given


def register(app: typer.Typer, emulate: typer.Typer) -> None:
    @app.command("migrate")
    def migrate_cmd(
        config: ConfigOpt = None,
        resume: Annotated[bool, typer.Option(
            "--resume", help="Continue the run recorded in the work folder.")] = False,
        resume_or_start: Annotated[bool, typer.Option(
            "--resume-or-start", help="Continue the run recorded in the work folder, or "
            "start one when it holds none (one command for a supervisor to run again).")
        ] = False,
        workdir: WorkdirOpt = None,
        concurrency: Annotated[int | None, typer.Option(
            "--concurrency", help="Requests in flight to Amplitude (overrides \\[run]).",
            show_default=False)] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
        as_json: JsonOpt = False,
        new_api_key: Annotated[bool, typer.Option(
            "--new-api-key", help="With --resume: go on under the AMPLITUDE_API_KEY set now, "
            "a key regenerated for the SAME Amplitude project (the run is bound to the key "
            "its first batch went out under).")] = False,
    ) -> None:
        """Migrate Mixpanel history into Amplitude: export -> identity -> transform -> load.

        Journaled in the work folder's ledger: after a crash (kill -9 included) run again
        with --resume; nothing is lost and only batches in flight are sent again. Exit 0
        when every window adds up (read = sent + identity + duplicate + skipped + rejected
        + dead-lettered + parked), 1 when one does not (named), 2 when the run stops (bad
        config/credentials/input, an API's retries spent, a full disk: the message says how
        to go on), 3 when events wait for Amplitude's daily quota (resume later).
        """
        cfg: Any = None

        def interrupted() -> str:
            if cfg is None:  # before the pipeline was imported, maybe
                if resume:  # this resume did nothing; what earlier runs did is kept
                    return ("this resume had not started yet (the ledger keeps what earlier "
                            "runs did): run the same command again")
                return "nothing was recorded yet: run the same command again"
            from mp2amp.pipeline.import_folder import resume_note
            from mp2amp.pipeline.migrate import ledger_path

            if not ledger_path(cfg).exists():
                return "nothing was recorded yet: run the same command again"
            output_dir = cfg.amplitude.output_dir
            again = "again" if resume_or_start else "with --resume"
            return (f"the ledger in {cfg.run.workdir} keeps everything done so far: run "
                    f"the same `mp2amp migrate` command {again} to go on ("
                    f"{resume_note(None if output_dir is None else str(output_dir))})")

        with cli_errors(interrupted, as_json=as_json):
            # inside: a Ctrl-C during these imports is reported as any other stop
            from mp2amp.pipeline.migrate import migrate
            from mp2amp.pipeline.progress import choose_reporter

            if new_api_key and not resume:
                from mp2amp.errors import TerminalError

                raise TerminalError("--new-api-key goes with --resume (a new run is bound to "
                                    "the key it starts with): add --resume, or leave it out")
            # a Path: the loader resolves it against the current folder, not the file's
            cfg = load_cli_config(config, {"run.workdir": workdir, "run.concurrency": concurrency},
                                  export_api=True)
            if resume_or_start and not resume:
                from mp2amp.pipeline.migrate import ledger_path

                # a run is recorded from its ledger on: without one (a first try stopped
                # before it was made) the run starts, as a first try would
                resume = ledger_path(cfg).exists()
            result = migrate(cfg, resume=resume, reporter=choose_reporter(quiet or as_json),
                             new_api_key=new_api_key)
            if as_json:
                print_json(result.as_dict())
            else:
                with printing_result():  # the run is over: a stop now changes nothing
                    _render_migration(result)
            raise typer.Exit(result.exit_code)

    @app.command("status")
    def status_cmd(
        config: ConfigOpt = None,
        workdir: WorkdirOpt = None,
        windows: Annotated[bool, typer.Option(
            "--windows", help="One row per window.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Progress and counts of a migration, from its ledger."""
        with cli_errors(as_json=as_json):
            from mp2amp.pipeline.status import status  # inside: a Ctrl-C here is a stop

            result = status(_status_workdir(config, workdir))
            if as_json:
                print_json(result.as_dict())
                return
            with printing_result():  # read whole: a stop now changes nothing
                _render_status(result, windows)


def _render_status(result: StatusResult, windows: bool) -> None:
    """Where a migration stands, for people."""
    states = ", ".join(f"{k} {v}" for k, v in sorted(result.states.items())) or "none planned"
    unsettled = result.batches["in_flight"]
    # in flight only while a run holds the folder; after a stop they wait for --resume
    flight = f"in flight {unsettled}" if result.running_pid is not None or not unsettled \
        else f"sent but not confirmed {unsettled} (sent again by --resume)"
    console.print(f"ledger {escape(str(result.ledger))}: windows {states}; batches done "
                  f"{result.batches['done']}, {flight}")
    _render_totals(result.totals, _status_title(result))
    if result.running_pid is not None:
        console.print(f"running now: mp2amp migrate, pid {result.running_pid or '?'}",
                      markup=False, highlight=False)
    if result.last_attempt is not None:
        console.print(_last_attempt_line(result.last_attempt,
                                         running=result.running_pid is not None),
                      markup=False, highlight=False)
    if windows:
        _render_windows(result.windows)
    if result.loaded:
        _render_problems(result.windows)


def _status_title(result: StatusResult) -> str:
    """Where the run stands, over its totals: once every window is loaded, what it still
    waits for (``StatusResult.complete``)."""
    if result.complete:
        return "complete"
    if not result.windows and result.running_pid is None:
        if not result.totals.get("balanced"):  # no fingerprint: killed as it started
            return ("not started: the last run stopped before it planned its windows; run "
                    "`mp2amp migrate` again (with or without --resume)")
        return "nothing to migrate: the run planned no windows"
    if not result.loaded:
        return "in progress"
    if any(w.parked for w in result.windows):
        return ("loaded; parked events wait for Amplitude's daily quota: run `mp2amp migrate "
                "--resume` later")
    if result.running_pid is not None:
        return "loaded; the run is finishing (dead-letter file, its end)"
    return ("loaded; the last run was killed before its end: run `mp2amp migrate --resume` to "
            "finish it")


def _last_attempt_line(doc: dict[str, Any], *, running: bool) -> str:
    """``running``: a migrate holds the folder's lock now (a resume would be refused)."""
    import datetime as dt

    def when(key: str) -> str:
        value = doc.get(key)
        if not isinstance(value, int | float):
            return "?"
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    if doc.get("outcome") == "running":
        if running:
            return f"last run: started {when('started')}; it is running now"
        return (f"last run: started {when('started')}; its end is not recorded: it was killed "
                "(kill -9, out of memory, power loss); continue with `mp2amp migrate --resume`")
    code = doc.get("exit_code")
    line = (f"last run: {when('started')} to {when('ended')}, {doc.get('outcome', '?')}"
            + (f" (exit {code})" if code is not None else ""))
    return line + (f": {doc['message']}" if doc.get("message") else "")


def _render_migration(result: MigrateResult) -> None:
    """A finished migration's result, for people."""
    _render_totals(result.totals, "migration")
    _render_import_files(result.load)
    _render_problems(result.windows)
    if result.dead_letter_file and result.totals.get("rejected", 0) + \
            result.totals.get("dead_lettered", 0):
        console.print(f"rejected records: {escape(str(result.dead_letter_file))}",
                      highlight=False)
    if result.changed_inputs:
        names = ", ".join(result.changed_inputs[:3]) + (
            f" and {len(result.changed_inputs) - 3} more"
            if len(result.changed_inputs) > 3 else "")
        err_console.print(
            f"warning: {len(result.changed_inputs)} input file(s) changed after "
            f"they were staged: {names}; the run migrated them as staged (records "
            "added since are not in it): migrate what was added in a new run with "
            "its own work folder", markup=False, highlight=False)
    if result.not_in_run:
        names = ", ".join(result.not_in_run[:3]) + (
            f" and {len(result.not_in_run) - 3} more" if len(result.not_in_run) > 3
            else "")
        err_console.print(
            f"warning: {len(result.not_in_run)} input file(s) match the sources "
            f"but are not part of this run, which started without them: {names}; "
            "migrate them in a new run with its own work folder",
            markup=False, highlight=False)
    if result.time_check is not None:  # said as the load began, and again here
        err_console.print(f"warning: {result.time_check.message(final=True)}",
                          markup=False, highlight=False)
    if result.totals.get("parked"):
        err_console.print(
            f"{result.totals['parked']} events wait for Amplitude's daily quota; "
            "run `mp2amp migrate --resume` later to deliver them")


def _render_totals(t: dict[str, Any], title: str) -> None:
    table = Table(title=f"mp2amp {title}")
    for col in ("windows", "read", "sent", "identity", "duplicate", "skipped", "rejected",
                "dead_lettered", "parked", "balanced"):
        table.add_column(col, justify="right")
    table.add_row(*(f"{t.get(c, 0):,}" if isinstance(t.get(c), int) and not isinstance(
        t.get(c), bool) else str(t.get(c)) for c in (
        "windows", "read", "sent", "identity", "duplicate", "skipped", "rejected",
        "dead_lettered", "parked", "balanced")))
    _wide().print(table)
    console.print("invariant: read = sent + identity + duplicate + skipped + rejected + "
                  "dead_lettered + parked")


def _render_import_files(load: dict[str, Any]) -> None:
    """What ``[amplitude] output_dir`` runs wrote (as ``--json`` has it under ``load``)."""
    if "output_dir" not in load:
        return
    files = load.get("files") or []
    if load.get("note"):
        console.print(escape(f"{load['output_dir']}: {load['note']}"), highlight=False)
    else:
        console.print(f"wrote {load.get('events', 0):,} events in {len(files)} file(s) to "
                      f"{escape(str(load['output_dir']))}:", highlight=False)
    for f in files:
        console.print(f"  {escape(str(f['path']))}  ({f['events']:,} events, {f['bytes']:,} bytes)",
                      highlight=False, soft_wrap=True)
    if load.get("converter_config"):
        console.print(f"converter config: {escape(str(load['converter_config']))}", highlight=False,
                      soft_wrap=True)
    removed = load.get("files_removed_from_earlier_attempts") or []
    if removed:
        console.print(f"removed {len(removed)} file(s) of earlier attempts", highlight=False)
    for warning in load.get("warnings") or []:
        err_console.print(f"[bold yellow]warning:[/] {escape(str(warning))}", highlight=False,
                          soft_wrap=True)


def _render_windows(rows: list[WindowCounts]) -> None:
    table = Table()
    # the invariant's terms, in its order: a row adds up as the totals line does
    for col in ("window", "state", "read", "sent", "identity", "dup", "skipped", "rejected",
                "dead", "parked", "batches"):
        table.add_column(col)
    for r in rows:
        table.add_row(escape(_short(r.window)), r.state, str(r.read), str(r.sent),
                      str(r.identity), str(r.duplicate),
                      str(sum(r.skipped.values())), str(sum(r.rejected.values())),
                      str(sum(r.dead_lettered.values())), str(r.parked),
                      f"{r.batches_done}/{'?' if r.batches is None else r.batches}")
    _wide().print(table)


def _wide() -> Console:
    """Tables never squeeze their numbers, even when stdout is a pipe (80 columns)."""
    return StdoutConsole(width=max(160, console.width))


def _short(window: str, width: int = 44) -> str:
    """A window id that fits a column: the end of a long path is the part that differs."""
    return window if len(window) <= width else "…" + window[-(width - 1):]


def _render_problems(rows: list[WindowCounts]) -> None:
    for r in rows:
        problem = r.problem()
        if problem:
            err_console.print(f"[bold red]does not add up:[/] {escape(problem)}", highlight=False)
