"""``mp2amp demo``: the embedded end-to-end migration on generated data (``make demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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
    from mp2amp.pipeline.demo import DemoResult


def register(app: typer.Typer, emulate: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        events: Annotated[int, typer.Option(
            "--events", min=1_000, help="About how many Mixpanel events to generate.")] = 200_000,
        workdir: Annotated[Path | None, typer.Option(
            "--workdir", help="Folder for the project, emulator data and ledger "
                              "(default: a new temporary folder).", show_default=False)] = None,
        fail_rate: Annotated[float, typer.Option(
            "--fail-rate", min=0.0, max=0.5,  # pipeline.demo.MAX_FAULT_RATE
            help="Share of Amplitude requests answered 500/502/503/504.")] = 0.05,
        drop_rate: Annotated[float, typer.Option(
            "--drop-rate", min=0.0, max=0.5,  # (not imported here: the CLI loads fast)
            help="Share of Amplitude requests ingested, then answered by a dropped "
                 "connection.")] = 0.01,
        seed: Annotated[int, typer.Option("--seed", help="Data and fault seed.")] = 7,
        legacy_time: Annotated[bool, typer.Option(
            "--legacy-time", help="A project created before 2023: its export holds "
                                  "project-local times, which must become UTC.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Generate a Mixpanel project, migrate it through both local emulators (with faults),
        read Amplitude back and compare. Exit 0 only when every event type matches."""
        said: list[str] = []  # what the stopped demo kept and how to go on
        with cli_errors(interrupted=lambda: said[0] if said else "the demo stopped",
                        as_json=as_json):
            # inside: a Ctrl-C during these imports is reported as any other stop
            from mp2amp.pipeline.demo import DemoInterrupted, run_demo
            from mp2amp.pipeline.progress import choose_reporter

            try:
                result = run_demo(events, workdir, seed=seed, fail_rate=fail_rate,
                                  drop_rate=drop_rate,
                                  reporter=choose_reporter(quiet or as_json),
                                  legacy_time=legacy_time)
            except DemoInterrupted as exc:
                said.append(exc.hint)
                raise
            if as_json:
                print_json(result.as_dict())
            else:
                with printing_result():  # the demo is over: a stop now changes nothing
                    _render(result)
            raise typer.Exit(result.exit_code)


SHOWN_MISMATCHES = 20  # daily mismatches printed; --json lists them all
# Amplitude takes 1024-character event types: a long one is folded onto more lines
# rather than squeezing the counts and the verdict out of the table
TYPE_WIDTH = 48
COUNT_WIDTH = 11  # 999,999,999


def _render(result: DemoResult) -> None:
    table = Table(title="Mixpanel vs Amplitude, events per type")
    table.add_column("event type", max_width=TYPE_WIDTH, overflow="fold")
    for col in ("Mixpanel raw", "expected", "Amp export", "Amp segment."):
        table.add_column(col, justify="right", no_wrap=True, min_width=COUNT_WIDTH)
    table.add_column("", no_wrap=True, min_width=len("MISMATCH"))
    for r in result.rows:
        table.add_row(escape(r.event_type), f"{r.mixpanel_raw:,}", f"{r.expected:,}",
                      f"{r.amplitude_export:,}",
                      f"{r.amplitude_segmentation:,}" + ("" if r.segmentation_asked else "*"),
                      "ok" if r.ok else "[bold red]MISMATCH[/]")
    t = result.migration.totals
    table.add_row("total", f"{sum(r.mixpanel_raw for r in result.rows):,}",
                  f"{sum(r.expected for r in result.rows):,}",
                  f"{sum(r.amplitude_export for r in result.rows):,}",
                  f"{sum(r.amplitude_segmentation for r in result.rows):,}", "", end_section=True)
    StdoutConsole(width=max(110, console.width)).print(table)  # never squeeze the numbers
    console.print("Mixpanel raw: records per event name in the export (duplicates, identity "
                  "events, unusable and hot-shard records included); expected: what a correct "
                  "migration sends (the generator's ground truth); Amplitude: read back through "
                  "its Export API and its segmentation API.", soft_wrap=True)
    if result.unreadable:
        console.print(f"Mixpanel raw leaves out {result.unreadable:,} unreadable record(s) "
                      "(cut lines, no event name; the migration counts them as rejected).",
                      soft_wrap=True)
    if not all(r.segmentation_asked for r in result.rows):
        console.print("*: not asked of segmentation, the export's count is shown: a name "
                      "segmentation reserves (_all, _active, revenue_amount, ce:...), one too "
                      "long for its URL, or a raw name nothing expects in Amplitude and its "
                      "export does not have.", soft_wrap=True)
    load = result.migration.load
    console.print(
        f"invariant: read {t['read']:,} = sent {t['sent']:,} + identity {t['identity']:,} + "
        f"duplicate {t['duplicate']:,} + skipped {t['skipped']:,} + rejected {t['rejected']:,}"
        f" + dead-lettered {t['dead_lettered']:,} + parked {t['parked']:,}: "
        + ("holds" if t["balanced"] else "[bold red]DOES NOT HOLD[/]"))
    console.print(
        f"Amplitude requests: {load.get('requests', 0):,} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(load.get('requests_by_status', {}).items()))}"
        f"), retries {load.get('retries', 0)}, throttles {load.get('throttles', 0)}, "
        f"splits {load.get('splits', 0)}")
    _render_events(result)
    _render_revenue(result)
    for line in result.daily_mismatches[:SHOWN_MISMATCHES]:
        err_console.print(f"[red]daily mismatch:[/] {escape(line)}")
    left_out = len(result.daily_mismatches) - SHOWN_MISMATCHES
    if left_out > 0:
        err_console.print(f"[red]... and {left_out:,} more daily mismatches[/] (--json "
                          f"lists all {len(result.daily_mismatches):,})")
    where = "" if result.kept else " (a temporary folder, removed: --workdir DIR keeps one)"
    console.print(f"work folder: {result.workdir}{where}  ({result.seconds:.1f} s)",
                  markup=False)
    if result.ok:
        console.print("[bold green]demo OK:[/] Amplitude tells the same story as Mixpanel")
    else:
        err_console.print("[bold red]demo FAILED:[/] see the mismatches above")


def _render_events(result: DemoResult) -> None:
    """The per-event check: one line when it holds, else counts and examples."""
    check = result.events
    if check is None:
        return
    if check.ok:
        console.print(f"events: all {check.expected:,} expected events are in Amplitude once, "
                      "with the ground truth's user and device, the Mixpanel name, time, "
                      "session, location and device fields, properties and their values, "
                      "groups and revenue fields", soft_wrap=True)
        return
    err_console.print(f"[red]events:[/] {check.matched:,} of {check.expected:,} expected "
                      "events found in Amplitude by insert_id, checked one by one"
                      + (f"; {check.unchecked:,} with an unreadable Mixpanel time not checked"
                         if check.unchecked else ""))
    for line in check.lines():
        err_console.print(f"[red]event mismatch:[/] {escape(line)}")
    for example in check.examples:
        err_console.print(f"  e.g. {example}", soft_wrap=True, markup=False)


def _render_revenue(result: DemoResult) -> None:
    """Total revenue: expected (Mixpanel's records, by the [transform.revenue] rules) vs
    Amplitude's export and segmentation; a mismatch in red, with its days."""
    totals = result.revenue
    if totals is None:
        return
    from mp2amp.pipeline.proof_revenue import money

    seg = (f"segmentation revenue_amount {money(totals.segmentation)}"
           if totals.segmentation is not None
           else f"segmentation not compared ({totals.segmentation_note or 'not asked'})")
    line = (f"revenue: expected {money(totals.expected)} over {totals.expected_events:,} "
            f"event(s) (Mixpanel's records, by [transform.revenue]), Amplitude export "
            f"{money(totals.export)} over {totals.export_events:,}, {seg}: ")
    if totals.ok:
        console.print(line + "match", soft_wrap=True, markup=False)
        return
    err_console.print(line + "MISMATCH", soft_wrap=True, markup=False, style="red")
    for day in totals.daily_mismatches[:SHOWN_MISMATCHES]:
        err_console.print(f"  {day}", soft_wrap=True, markup=False)
