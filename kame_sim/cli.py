"""The ``kame-sim`` command line: parse, call, print. No simulation logic lives here.

Each command imports what it needs inside its function: ``kame-sim --help`` (and shell completion)
should not pay for the settings models (pydantic, the delay models), the trace schema (pyarrow) or
the simulator. A quick start-up is the one accepted reason for a function-level import in this
code base (tests/test_imports.py checks that `kame-sim --help` loads none of them).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kame_sim.errors import InputError

app = typer.Typer(
    help="Simulation and replay test bench for KAME-style tandem speech-to-speech systems.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
trace_app = typer.Typer(help="Inspect recorded traces.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")
import_app = typer.Typer(
    help="Turn recordings of a real KAME server into kame-sim traces.", no_args_is_help=True
)
app.add_typer(import_app, name="import")

console = Console()
err_console = Console(stderr=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad input becomes one line on stderr and exit code 2, never a traceback.

    The line may quote the user's text, so it is escaped: "[/x]" is text, not a rich markup tag.
    """
    try:
        yield
    except InputError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _overrides(
    conversation: Path | None, conversation_id: str | None, seed: int | None, sets: list[str]
) -> dict[str, Any]:
    from kame_sim.config import parse_override

    values: dict[str, Any] = dict(parse_override(s) for s in sets)
    if conversation is not None:
        if not conversation.exists():
            raise InputError(conversation, "--conversation", "no such directory")
        values["conversation.path"] = str(conversation.resolve())
    if conversation_id is not None:
        values["conversation.id"] = conversation_id
    if seed is not None:
        values["run.seed"] = seed
    return values


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario TOML file")],
    conversation: Annotated[
        Path | None, typer.Option(help="dataset directory (audio/, text/, oracle_raw/) to replay instead")
    ] = None,
    conversation_id: Annotated[
        str | None, typer.Option("--id", help="conversation id in the dataset")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (overrides run.seed)")] = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory (default: traces/<name>-<id>-seed<seed>)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing trace in the run directory")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a scenario key, e.g. --set llm.ttft=1.5")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    audio_out: Annotated[
        Path | None, typer.Option(help="kame front-end only: write a stereo wav (user left, front-end right)")
    ] = None,
    save_schedule: Annotated[
        Path | None, typer.Option(help="also write the delays the run realised as a schedule (JSON)")
    ] = None,
) -> None:
    """Run one scenario and write its trace; ends with a summary table."""
    from kame_sim.config import load_scenario
    from kame_sim.metrics.summary import summarize
    from kame_sim.report_text import render_summary
    from kame_sim.runner import run_scenario
    from kame_sim.schedule import check_schedule_target, schedule_from_trace
    from kame_sim.trace import read_trace

    with _user_errors():
        if save_schedule is not None:
            check_schedule_target(save_schedule, "--save-schedule")
        sc = load_scenario(scenario, _overrides(conversation, conversation_id, seed, set_ or []))
        progress = Progress(
            TextColumn("[bold]simulating[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames"),
            TimeElapsedColumn(),
            console=err_console,
            disable=quiet or not err_console.is_terminal,
            transient=True,
        )
        with progress:
            task = progress.add_task("frames", total=None)

            def report(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = run_scenario(sc, out, overwrite, report, audio_out)
        data = read_trace(result.trace_path)
        summary = summarize(data)
        render_summary(summary, console, f"kame-sim run · {sc.run.name}")
        console.print(f"trace: [bold]{result.trace_path}[/]")
        if save_schedule is not None:
            saved = schedule_from_trace(data)
            saved.write(save_schedule)
            console.print(f"schedule: [bold]{save_schedule}[/] ({len(saved)} delays)")
        if audio_out is not None:
            console.print(f"audio: [bold]{audio_out}[/] (user left, front-end right)")


@trace_app.command("show")
def trace_show(
    path: Annotated[Path, typer.Argument(help="run directory or trace.arrows file")],
    events: Annotated[int, typer.Option(help="also print the first N rows")] = 0,
    streams: Annotated[
        bool, typer.Option(help="one row per LLM stream: adoption, overlaps, how it ended")
    ] = True,
) -> None:
    """Summarise a recorded trace (complete or partial)."""
    from kame_sim.metrics.summary import summarize
    from kame_sim.report_text import render_summary
    from kame_sim.trace import read_trace

    with _user_errors():
        data = read_trace(path)
        if data.truncated:
            err_console.print("warning: the last record batch is torn; showing the complete ones")
        render_summary(summarize(data), console, f"trace · {data.path}", streams=streams)
        if events:
            rows = data.table.slice(0, events).drop_columns(["wall_s", "step_wall_s"]).to_pylist()
            for row in rows:
                console.print({k: v for k, v in row.items() if v is not None}, highlight=False)


@app.command()
def schedule(
    path: Annotated[Path, typer.Argument(help="run directory or trace.arrows file")],
    out: Annotated[Path | None, typer.Option(help="schedule file to write (default: print it)")] = None,
) -> None:
    """Write the delays a trace realised as a schedule (replay it with [delays] schedule)."""
    from kame_sim.schedule import check_schedule_target, schedule_from_trace
    from kame_sim.trace import read_trace

    with _user_errors():
        if out is not None:
            check_schedule_target(out, "--out")
        data = read_trace(path)
        if data.truncated:
            err_console.print("warning: the last record batch is torn; using the complete ones")
        extracted = schedule_from_trace(data)
    if out is None:
        sys.stdout.write(extracted.to_json())
        return
    extracted.write(out)
    console.print(f"schedule: [bold]{out}[/] ({len(extracted)} delays)")


def _progress_bar(label: str, quiet: bool) -> Progress:
    return Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,
        transient=True,
    )


@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="sweep TOML file")],
    out: Annotated[Path | None, typer.Option(help="sweep directory (default: traces/sweeps/<name>)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: all cores)")] = None,
    resume: Annotated[bool, typer.Option(help="skip runs that already finished")] = True,
    ray: Annotated[
        str | None, typer.Option(help="run on a Ray cluster at this address ('local' for one here)")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Run a design over scenario parameters × seeds × conversations; write results.parquet."""
    from kame_sim.sweep import run_sweep

    with _user_errors():
        progress = _progress_bar("sweeping", quiet)
        with progress:
            task = progress.add_task("runs", total=None)

            def report(done: int, total: int, failed: int) -> None:
                progress.update(task, completed=done, total=total)

            result = run_sweep(spec, out, workers, resume, report, ray)
    console.print(
        f"{result.total} runs: {len(result.executed)} run now, {len(result.resumed)} reused, "
        f"{len(result.failed)} failed in {result.wall_s:.1f} s"
    )
    console.print(f"results: [bold]{result.results_path}[/]  (report: kame-sim report {result.out_dir})")
    if result.failed:
        raise typer.Exit(1)


@app.command()
def check(
    spec: Annotated[Path, typer.Argument(help="check TOML file: a small sweep plus thresholds")],
    out: Annotated[Path | None, typer.Option(help="check directory (default: traces/checks/<name>)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: all cores)")] = None,
    junit: Annotated[Path | None, typer.Option(help="write JUnit XML here")] = None,
    markdown: Annotated[Path | None, typer.Option(help="write the Markdown summary here")] = None,
    resume: Annotated[bool, typer.Option(help="reuse finished runs (off: a gate judges fresh runs)")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """A CI robustness gate: run a small sweep, assert thresholds; exit 1 when one fails."""
    from kame_sim.sweep import run_check

    with _user_errors():
        progress = _progress_bar("checking", quiet)
        with progress:
            task = progress.add_task("runs", total=None)

            def report(done: int, total: int, failed: int) -> None:
                progress.update(task, completed=done, total=total)

            result = run_check(spec, out, workers, junit, markdown, resume, report)
    console.print(result.markdown, highlight=False, soft_wrap=True, markup=False)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="a run directory / trace.arrows, or a sweep directory")],
    out: Annotated[Path | None, typer.Option(help="report directory (default: <path>/report)")] = None,
    embed_images: Annotated[bool, typer.Option(help="inline the pictures into index.html")] = False,
    timelines: Annotated[
        int, typer.Option(min=0, help="sweep: interactive timelines per design point (0: none)")
    ] = 3,
) -> None:
    """Timeline picture, Perfetto export and HTML for a run; robustness curves for a sweep."""
    with _user_errors():
        base = path.parent if path.is_file() else path
        target = out or base / "report"
        if (base / "results.parquet").exists() or path.suffix == ".parquet":
            from kame_sim.report.sweep_report import report_for_sweep

            index = report_for_sweep(path, target, timelines=timelines)
        else:
            from kame_sim.report import report_for_trace

            index = report_for_trace(path, target, embed_images=embed_images)
    console.print(f"report: [bold]{index}[/]")


@app.command(
    "serve-llm",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def serve_llm(ctx: typer.Context) -> None:
    """A loopback OpenAI-compatible streaming LLM with simulated content, delays and faults.

    Options: kame-sim serve-llm --help. Point a live KAME server at it with
    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 OPENAI_API_KEY=dummy.
    """
    from kame_sim.llm.serve import main as serve_main

    raise typer.Exit(serve_main(list(ctx.args)))


@app.command("init-checkpoint")
def init_checkpoint(
    directory: Annotated[Path, typer.Argument(help="directory to write the checkpoint into")],
    tiny: Annotated[
        bool, typer.Option(help="the tiny random-weight architecture (the only kind offered)")
    ] = False,
    seed: Annotated[int, typer.Option(help="seed of the random weights")] = 0,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty directory")] = False,
) -> None:
    """Write a complete random-weight KAME checkpoint in the real layout (smoke tests, CI)."""
    with _user_errors():
        if not tiny:
            raise InputError("<cli>", "--tiny", "only tiny checkpoints can be generated (pass --tiny)")
        from kame_sim.frontend.kame.tiny import write_tiny_checkpoint

        ckpt = write_tiny_checkpoint(directory, seed=seed, overwrite=overwrite)
    console.print(f"wrote a tiny KAME checkpoint to [bold]{ckpt.root}[/] (config, LM, Mimi, tokenizer)")


@import_app.command("kame-logs")
def import_kame_logs_command(
    log_dir: Annotated[Path, typer.Argument(help="KAME's --log-dir (asr_partial.txt, user_words.txt, ...)")],
    out: Annotated[Path | None, typer.Option(help="run directory (default: traces/kame-logs-<dir>)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing trace")] = False,
    start_epoch_ms: Annotated[
        int | None, typer.Option(help="time zero (default: the earliest logged line)")
    ] = None,
) -> None:
    """Import a KAME server's plain-text logs as a trace (replay it with [replay] oracle_from)."""
    from kame_sim.replay import default_import_dir, import_kame_logs

    with _user_errors():
        trace = import_kame_logs(log_dir, out or default_import_dir(log_dir), overwrite, start_epoch_ms)
    console.print(f"trace: [bold]{trace}[/]  (kame-sim trace show {trace.parent})")


@app.command()
def validate(scenario: Annotated[Path, typer.Argument(help="scenario TOML file")]) -> None:
    """Check a scenario and its conversation (every sample too) without running it."""
    from kame_sim.config import load_scenario
    from kame_sim.runner import build_session_parts, load_run_conversation

    with _user_errors():
        sc = load_scenario(scenario)
        conv = load_run_conversation(sc)
        conv.load_audio()  # a behavioural run never decodes the audio; a check should
        build_session_parts(sc, conv)
    console.print(f"ok: {scenario} ({conv.id}, {conv.duration_s:.1f} s, {len(conv.words)} words)")


@app.command()
def presets() -> None:
    """List the named delay presets and their sources."""
    from kame_sim.delays import PRESETS

    table = Table(title="delay presets", header_style="bold")
    for col in ("name", "model", "source"):
        table.add_column(col)
    for name, preset in PRESETS.items():
        table.add_row(name, preset.spec.describe(), preset.source)
    console.print(table)


@app.command("metrics")
def metrics_command(
    paths: Annotated[
        list[Path], typer.Argument(help="run directories, trace files (.arrows/.arrow) or sweep directories")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (runs with their turns)")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="print CSV: one row per run")] = False,
    per_turn: Annotated[bool, typer.Option(help="CSV: one row per user turn instead of per run")] = False,
    out: Annotated[Path | None, typer.Option(help="write the JSON or CSV to this file")] = None,
    references: Annotated[
        bool, typer.Option(help="rebuild the real replies from the conversation for reply_f1")
    ] = True,
) -> None:
    """Every per-run and per-turn metric of one or more runs (docs/metrics.md)."""
    from kame_sim.export.metrics_table import render, run_records, to_csv, to_json, write_output
    from kame_sim.export.sources import find_runs

    with _user_errors():
        if as_json and as_csv:
            raise InputError("<cli>", "--csv", "choose one of --json and --csv")
        if out is not None and not (as_json or as_csv):
            if out.suffix.lower() not in (".json", ".csv"):
                raise InputError(out, "--out", "pass --json or --csv (or name a .json or .csv file)")
            as_json, as_csv = out.suffix.lower() == ".json", out.suffix.lower() == ".csv"
        if per_turn and not as_csv:
            raise InputError("<cli>", "--per-turn", "only for --csv (JSON and tables hold both levels)")
        found = find_runs(paths)
        records = run_records(found.runs, references)
        for note in [*found.notes, *(n for r in records for n in r.notes)]:
            err_console.print(note, highlight=False, soft_wrap=True, markup=False)
        if as_json or as_csv:
            text = to_json(records) if as_json else to_csv(records, per_turn)
            write_output(text, out, sys.stdout)
        else:
            render(records, console)
    if out is not None:
        err_console.print(f"wrote {out}", highlight=False)


@app.command("export")
def export_command(
    paths: Annotated[list[Path], typer.Argument(help="sweep directories, run directories or trace files")],
    parquet: Annotated[
        Path, typer.Option(help="dataset directory (new, empty, or an earlier export, which is replaced)")
    ],
) -> None:
    """Every event of many runs as ONE hive-partitioned Parquet dataset (conversation_id, policy)."""
    from kame_sim.export.dataset import export_parquet

    with _user_errors():
        result = export_parquet(paths, parquet)
    for note in result.notes:
        err_console.print(note, highlight=False, soft_wrap=True, markup=False)
    shown = ", ".join(result.parameter_keys) or "none"
    console.print(
        f"{result.rows} events of {result.runs} run(s) in {len(result.files)} file(s): "
        f"[bold]{result.out_dir}[/] (parameters: {shown})",
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
