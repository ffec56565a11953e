"""The ``kame-sim`` command line: parse, call, print. No simulation logic lives here.

Each command imports what it needs inside its function: ``kame-sim --help`` (and shell completion)
should not pay for the settings models (pydantic, the delay models), the trace schema (pyarrow) or
the simulator. A quick start-up is the one accepted reason for a function-level import in this
code base (tests/test_imports.py checks that `kame-sim --help` loads none of them).
"""

from __future__ import annotations

import json
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

from kame_sim.cli_errors import OneLineErrorsGroup
from kame_sim.errors import InputError

app = typer.Typer(
    cls=OneLineErrorsGroup,
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


def _version_line() -> str:
    """kame-sim's version, and moshi's and torch's when installed (read from their metadata:
    importing torch would take seconds)."""
    import platform
    from importlib import metadata, util

    from kame_sim import __version__

    parts = []
    for name in ("moshi", "torch"):
        try:
            found = util.find_spec(name) is not None
            parts.append(f"{name} {metadata.version(name)}" if found else f"{name} not installed")
        except (metadata.PackageNotFoundError, ValueError):
            parts.append(f"{name} not installed")
    return f"kame-sim {__version__} (python {platform.python_version()}, {', '.join(parts)})"


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(_version_line() + "\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the versions and exit"),
    ] = False,
) -> None:
    pass


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
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            help="run N lockstep replicas in one process (seeds seed..seed+N-1, one batched front-end "
            "step per frame); with --out, replica directories go to OUT/seed<seed>",
        ),
    ] = 1,
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
        if replicas > 1:
            _run_replicas(sc, replicas, out, overwrite, quiet, audio_out, save_schedule)
            return
        progress = _progress_bar("simulating", quiet, "frames")
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


def _run_replicas(
    sc: Any,
    replicas: int,
    out: Path | None,
    overwrite: bool,
    quiet: bool,
    audio_out: Path | None,
    save_schedule: Path | None,
) -> None:
    """``kame-sim run --replicas N``: lockstep replicas (kame_sim/lockstep.py), one trace each."""
    from kame_sim.lockstep import replica_scenarios, run_batch

    for given, name in ((audio_out, "--audio-out"), (save_schedule, "--save-schedule")):
        if given is not None:
            raise InputError("<cli>", name, "works for one run; drop it or --replicas")
    scenarios = replica_scenarios(sc, replicas)
    dirs = [None if out is None else out / f"seed{s.run.seed}" for s in scenarios]
    with _progress_bar(f"simulating {replicas} replicas", quiet) as progress:
        task = progress.add_task("frames", total=None)
        results = run_batch(
            scenarios, dirs, overwrite, lambda done, total: progress.update(task, completed=done, total=total)
        )
    for s, result in zip(scenarios, results, strict=True):
        console.print(f"seed {s.run.seed}: trace [bold]{result.trace_path}[/]")


@trace_app.command("show")
def trace_show(
    path: Annotated[Path, typer.Argument(help="run directory or trace.arrows file")],
    events: Annotated[
        int | None,
        typer.Option(help="print the first N rows (of those --event/--from/--to select; all with a filter)"),
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            help="only rows of this event kind; repeat it or give a comma list (llm_start,llm_adopt)",
        ),
    ] = None,
    from_s: Annotated[
        float | None, typer.Option("--from", help="only rows with t_sim >= S (seconds)")
    ] = None,
    to_s: Annotated[float | None, typer.Option("--to", help="only rows with t_sim <= S (seconds)")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the selected rows as JSON lines (no summary)")
    ] = False,
    streams: Annotated[
        bool, typer.Option(help="one row per LLM stream: adoption, overlaps, how it ended")
    ] = True,
) -> None:
    """Summarise a recorded trace (complete or partial), and print the rows you select."""
    from kame_sim.metrics.summary import summarize
    from kame_sim.report_text import render_summary
    from kame_sim.trace import WALL_COLUMNS, read_trace
    from kame_sim.trace.select import select_rows

    with _user_errors():
        kinds = [k.strip() for item in event or [] for k in item.split(",") if k.strip()]
        filtered = bool(kinds) or from_s is not None or to_s is not None
        if events is not None and events < 0:
            raise InputError("<cli>", "--events", f"must be at least 0, got {events}")
        data = read_trace(path)
        rows = select_rows(data.table, kinds, from_s, to_s)
        if events is not None:
            rows = rows.slice(0, events)
        elif not (filtered or as_json):
            rows = rows.slice(0, 0)
        if data.truncated:
            err_console.print("warning: the last record batch is torn; showing the complete ones")
        if as_json:
            for row in rows.to_pylist():
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        render_summary(summarize(data), console, f"trace · {data.path}", streams=streams)
        for row in rows.drop_columns([c for c in WALL_COLUMNS if c in rows.column_names]).to_pylist():
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


def _progress_bar(label: str, quiet: bool, unit: str = "runs") -> Progress:
    """Every long command's bar, on stderr: ``label`` (rich markup; may use ``task.description``),
    done / total ``unit``, elapsed time; gone when done, off with --quiet or when not a terminal."""
    return Progress(
        TextColumn(f"[bold]{label}[/]" if "[/]" not in label else label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,
        transient=True,
    )


_SWEEP_SET_HELP = (
    "change a scenario key in every run, e.g. --set policy.kind=multiplexer (wins over the file's set table)"
)


def _sets(sets: list[str] | None) -> dict[str, Any]:
    from kame_sim.config import parse_override

    return dict(parse_override(s) for s in sets or [])


@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="sweep TOML file")],
    out: Annotated[Path | None, typer.Option(help="sweep directory (default: traces/sweeps/<name>)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: all cores)")] = None,
    resume: Annotated[bool, typer.Option(help="skip runs that already finished")] = True,
    ray: Annotated[
        str | None, typer.Option(help="run on a Ray cluster at this address ('local' for one here)")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=_SWEEP_SET_HELP)] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch",
            help="step up to N runs of the real front-end that share conversation and checkpoint as one "
            "lockstep batch (default: the file's batch_size, else 1)",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Run a design over scenario parameters × seeds × conversations; write results.parquet."""
    from kame_sim.sweep.runner import run_sweep

    with _user_errors():
        progress = _progress_bar("sweeping", quiet)
        with progress:
            task = progress.add_task("runs", total=None)

            def report(done: int, total: int, failed: int) -> None:
                progress.update(task, completed=done, total=total)

            result = run_sweep(spec, out, workers, resume, report, ray, _sets(set_), batch)
    batches = f" ({result.batches} lockstep batches of up to {result.batch_size})" if result.batches else ""
    console.print(
        f"{result.total} runs: {len(result.executed)} run now{batches}, {len(result.resumed)} reused, "
        f"{len(result.failed)} failed in {result.wall_s:.1f} s"
    )
    console.print(f"results: [bold]{result.results_path}[/]  (report: kame-sim report {result.out_dir})")
    if result.failed:
        raise typer.Exit(1)


@app.command()
def search(
    spec: Annotated[Path, typer.Argument(help="search TOML file: objective, space, constraints, budget")],
    out: Annotated[Path | None, typer.Option(help="search directory (default: traces/search/<name>)")] = None,
    resume: Annotated[
        bool, typer.Option(help="continue the study in the search directory (same spec; more trials allowed)")
    ] = False,
    workers: Annotated[
        int, typer.Option(help="worker processes for each trial's runs (1: in this process)")
    ] = 1,
    set_: Annotated[list[str] | None, typer.Option("--set", help=_SWEEP_SET_HELP)] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Adversarial search (Optuna): the worst scenario within constraints; trials, best/, report."""
    from kame_sim.search import run_search  # imports optuna: only when the command runs

    with _user_errors():
        progress = _progress_bar("searching", quiet, "trials {task.description}")
        with progress:
            task = progress.add_task("", total=None)

            def report(done: int, total: int, best: float | None) -> None:
                shown = "" if best is None else f"best {best:.4g}"
                progress.update(task, completed=done, total=total, description=shown)

            run = run_search(spec, out, resume, report, workers, _sets(set_))
    console.print(run.outputs.summary, highlight=False, soft_wrap=True, markup=False)


@app.command()
def check(
    spec: Annotated[Path, typer.Argument(help="check TOML file: a small sweep plus thresholds")],
    out: Annotated[Path | None, typer.Option(help="check directory (default: traces/checks/<name>)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: all cores)")] = None,
    junit: Annotated[Path | None, typer.Option(help="write JUnit XML here")] = None,
    markdown: Annotated[Path | None, typer.Option(help="write the Markdown summary here")] = None,
    resume: Annotated[bool, typer.Option(help="reuse finished runs (off: a gate judges fresh runs)")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help=_SWEEP_SET_HELP)] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    baseline: Annotated[
        Path | None,
        typer.Option(help="baseline sweep (directory or results.parquet) for the check's baseline tables"),
    ] = None,
    shrink: Annotated[
        int,
        typer.Option(
            min=0,
            max=100_000,
            help="shrink each failed assertion's worst run with this replay budget (0: off)",
        ),
    ] = 0,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch",
            help="step up to N real-front-end runs as one lockstep batch (default: the file's batch_size)",
        ),
    ] = None,
) -> None:
    """A CI robustness gate: run a small sweep, assert thresholds; exit 1 when one fails."""
    from kame_sim.sweep.check import run_check

    shrinker = _check_shrinker(shrink) if shrink else None

    with _user_errors():
        progress = _progress_bar("checking", quiet)
        with progress:
            task = progress.add_task("runs", total=None)

            def report(done: int, total: int, failed: int) -> None:
                progress.update(task, completed=done, total=total)

            result = run_check(
                spec, out, workers, junit, markdown, resume, report, baseline, _sets(set_), shrinker, batch
            )
    console.print(result.markdown, highlight=False, soft_wrap=True, markup=False)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def shrink(
    run: Annotated[Path, typer.Argument(help="a run folder (or its trace) that fails the condition")],
    fails: Annotated[
        str, typer.Option(help='when a run fails: "METRIC OP VALUE", e.g. "reply_f1_mean < 0.3"')
    ],
    out: Annotated[Path | None, typer.Option(help="output folder (default: RUN/../<run>-shrunk)")] = None,
    max_runs: Annotated[int, typer.Option(help="replay budget (cached replays are free)")] = 300,
    tolerance: Annotated[float, typer.Option(help="bisection stops within this many seconds")] = 0.01,
    timeline: Annotated[bool, typer.Option(help="draw the reproducer's timeline.png")] = True,
    nominal_from: Annotated[
        Path | None,
        typer.Option(help="scenario whose delay models give the nominal delays (default: RUN's own)"),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Minimal failing delay schedule: fewest events away from nominal, smallest delays."""
    from kame_sim.shrink.run import shrink_run
    from kame_sim.shrink.search import ShrinkError

    with _user_errors():
        progress = _progress_bar("[bold]shrinking[/] {task.description}", quiet)
        with progress:
            task = progress.add_task("", total=None)

            def report(done: int, total: int, size: int, phase: str) -> None:
                progress.update(task, completed=done, total=total, description=f"{phase}: {size} events")

            try:
                outcome = shrink_run(run, fails, out, max_runs, tolerance, report, timeline, nominal_from)
            except ShrinkError as exc:
                err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None
    console.print(outcome.summary(), highlight=False, soft_wrap=True)
    for entry in outcome.result.entries:
        text = f"  {escape(_entry_text(entry.entry))}: {escape(entry.note())}"
        console.print(text, highlight=False, soft_wrap=True)
    console.print(f"schedule: [bold]{outcome.schedule_path}[/]", highlight=False, soft_wrap=True)
    if outcome.timeline_path is not None:
        console.print(f"timeline: {outcome.timeline_path}", highlight=False, soft_wrap=True)
    console.print(f"reproduce: [bold]{escape(outcome.command())}[/]", soft_wrap=True)


def _entry_text(entry: dict[str, Any]) -> str:
    ids = ", ".join(f"{k} {v}" for k, v in entry.items() if k not in ("kind", "seconds", "detail", "note"))
    return f"{entry['kind']} ({ids})"


def _check_shrinker(max_runs: int) -> Any:
    """``check --shrink``: shrink a failed assertion's worst run into ``<check>/shrunk/<run>``."""
    from kame_sim.shrink.run import shrink_run
    from kame_sim.shrink.search import ShrinkError

    def shrink(worst: Any, out_dir: Path) -> tuple[str | None, str]:
        try:
            outcome = shrink_run(
                worst.folder,
                worst.condition,
                out_dir / "shrunk" / worst.folder.name,
                max_runs=max_runs,
                timeline=False,  # a gate stays quick; kame-sim report OUT/run draws it
            )
        except (ShrinkError, InputError) as exc:
            return None, f"could not shrink: {exc}"
        return outcome.command(), outcome.summary()

    return shrink


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
    from kame_sim.report.publish import publish_report

    with _user_errors():
        base = path.parent if path.is_file() else path
        target = out or base / "report"
        if (base / "results.parquet").exists() or path.suffix == ".parquet":
            from kame_sim.report.sweep_report import report_for_sweep

            index = publish_report(
                target, lambda staging: report_for_sweep(path, staging, timelines=timelines)
            )
        else:
            from kame_sim.report import report_for_trace

            index = publish_report(
                target, lambda staging: report_for_trace(path, staging, embed_images=embed_images)
            )
    console.print(f"report: [bold]{index}[/]")


#: kame_sim.llm.serve.DEFAULT_PORT (not imported: aiohttp loads slowly; a test keeps them equal).
SERVE_LLM_PORT = 8089
_FAULT_KINDS = "http_429, http_5xx, stall, drop, malformed"


@app.command("serve-llm")
def serve_llm(
    host: Annotated[
        str, typer.Option(help="address to bind; a non-loopback one needs --allow-remote")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="TCP port, 0..65535 (0: any free port, printed)")
    ] = SERVE_LLM_PORT,
    allow_remote: Annotated[
        bool, typer.Option(help="allow a non-loopback --host (the server has no authentication)")
    ] = False,
    config: Annotated[
        Path | None, typer.Option(help="TOML file of ServeLlmConfig keys; the options below override it")
    ] = None,
    content: Annotated[
        str | None,
        typer.Option(help="reply text: echo (the last user: line), fixed:TEXT or oracle_raw (default echo)"),
    ] = None,
    conversation: Annotated[
        Path | None,
        typer.Option(help="dataset directory whose oracle_raw predictions --content oracle_raw serves"),
    ] = None,
    conversation_id: Annotated[
        str | None, typer.Option("--id", help="conversation id in --conversation (when it holds several)")
    ] = None,
    user_speaker: Annotated[
        str | None, typer.Option(help="oracle_raw: the user's speaker (default A)")
    ] = None,
    frontend_speaker: Annotated[
        str | None, typer.Option(help="oracle_raw: whose predictions to serve (default B)")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="a model name GET /v1/models lists (repeatable; default gpt-4.1; any name is answered)"
        ),
    ] = None,
    ttft: Annotated[
        str | None,
        typer.Option(help="time to first token: seconds, a preset name or a TOML table (default 0.2)"),
    ] = None,
    inter_chunk: Annotated[
        str | None, typer.Option(help="gap between chunks: seconds, a preset or a table (default 0.02)")
    ] = None,
    words_per_chunk: Annotated[
        int | None, typer.Option(help="words per content chunk, at least 1 (default 1)")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="seed of the delay and fault draws, at least 0 (default 0)")
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(help=f"KIND=P: a probability per request (repeatable; sum <= 1); KIND: {_FAULT_KINDS}"),
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(help="comma list deciding requests 1, 2, ... in order: ok or a fault KIND"),
    ] = None,
    repeat_schedule: Annotated[
        bool | None, typer.Option(help="cycle --schedule instead of falling back to --fault after it")
    ] = None,
    stall_seconds: Annotated[
        float | None, typer.Option(help="how long a stall sends nothing, >= 0 s (default 5)")
    ] = None,
    fault_after: Annotated[
        int | None,
        typer.Option(help="content chunks sent before a stall, drop or malformed line (default 2)"),
    ] = None,
    error_status: Annotated[
        int | None, typer.Option(help="HTTP status of an http_5xx fault, 500..599 (default 503)")
    ] = None,
) -> None:
    """A loopback OpenAI-compatible streaming LLM with simulated content, delays and faults.

    Point a live KAME server at it with OPENAI_BASE_URL=http://127.0.0.1:PORT/v1
    OPENAI_API_KEY=dummy. Serves until Ctrl-C (docs/backends.md).
    """
    from kame_sim.llm.serve import check_host, check_port, config_from_options, serve_forever

    with _user_errors():
        check_port(port)
        settings = config_from_options(
            config,
            content=content,
            conversation=conversation,
            conversation_id=conversation_id,
            user_speaker=user_speaker,
            frontend_speaker=frontend_speaker,
            models=model,
            ttft=ttft,
            inter_chunk=inter_chunk,
            words_per_chunk=words_per_chunk,
            seed=seed,
            faults=fault,
            schedule=schedule,
            repeat_schedule=repeat_schedule,
            stall_seconds=stall_seconds,
            fault_after_chunks=fault_after,
            error_status=error_status,
        )
        check_host(host, allow_remote)
        serve_forever(settings, host, port, allow_remote)  # a port it cannot bind is one line too


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
    """Check a scenario and its conversation (every sample too) without running it (no recogniser,
    no request, nothing written)."""
    from kame_sim.config import load_scenario
    from kame_sim.runner import check_inputs, load_run_conversation

    with _user_errors():
        sc = load_scenario(scenario)
        conv = load_run_conversation(sc)
        conv.load_audio()  # a behavioural run never decodes the audio; a check reads every sample
        check_inputs(sc, conv)
    console.print(f"ok: {scenario} ({conv.id}, {conv.duration_s:.1f} s, {len(conv.words)} words)")


@app.command()
def presets() -> None:
    """List the named delay presets and their sources."""
    from kame_sim.delays import PRESETS

    table = Table(title="delay presets", header_style="bold")
    table.add_column("name", no_wrap=True)
    table.add_column("model")
    table.add_column("source", overflow="fold")
    for name, preset in PRESETS.items():
        table.add_row(name, preset.spec.describe(), preset.source)
    _print_unclipped(table)


def _print_unclipped(table: Table) -> None:
    """A terminal gets the table wrapped to its width; a pipe or file gets every row on one line
    (its natural width), so nothing is cut or folded for grep and friends."""
    if console.is_terminal:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update(max_width=100_000)).maximum
    Console(file=console.file, width=max(natural, 20), color_system=None).print(table)


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


# -- compare two runs or two sweeps; FDB turn-taking of one run (kame_sim/compare.py, metrics/fdb*.py)


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="A (the reference): a run directory / trace, or a sweep")],
    b: Annotated[Path, typer.Argument(help="B: the same kind as A")],
    out: Annotated[
        Path | None,
        typer.Option(help="runs: the two timelines as a PNG; sweeps: the table (.parquet, else CSV)"),
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="sweeps: a metric column to compare (repeatable)")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="runs: every metric, not only changed ones; sweeps: every metric")
    ] = False,
    n_boot: Annotated[int, typer.Option(help="sweeps: bootstrap resamples")] = 2000,
    seed: Annotated[int, typer.Option(help="sweeps: seed of the bootstrap")] = 0,
    from_s: Annotated[float | None, typer.Option("--from", help="runs: the picture starts at S s")] = None,
    to_s: Annotated[float | None, typer.Option("--to", help="runs: the picture ends at S seconds")] = None,
) -> None:
    """Two runs side by side (metrics, changed turns, timelines) or two sweeps per design point."""
    from kame_sim import compare as cmp

    with _user_errors():
        t_range = cmp.check_t_range(from_s, to_s)
        kinds = [cmp.is_sweep(p) for p in (a, b)]
        if kinds[0] != kinds[1]:
            raise InputError(b, None, "compare two runs or two sweeps, not one of each")
        if n_boot < 1:
            raise InputError("<cli>", "--n-boot", f"must be at least 1, got {n_boot}")
        if kinds[0]:
            _compare_sweeps(cmp, a, b, out, metric, all_, n_boot, seed)
        else:
            _compare_runs(cmp, a, b, out, all_, t_range)


def _compare_runs(
    cmp: Any, a: Path, b: Path, out: Path | None, all_: bool, t_range: tuple[float | None, float | None]
) -> None:
    result = cmp.compare_runs(a, b)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    table = Table(title=f"metrics · A = {result.a.path} · B = {result.b.path}", header_style="bold")
    for col in ("metric", "A", "B", "B − A"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    shown = [m for m in result.metrics if all_ or m.changed()]
    for m in shown:
        table.add_row(m.name, cmp.fmt(m.a), cmp.fmt(m.b), cmp.signed(m.delta))
    console.print(table)
    if not all_:
        console.print(f"{len(result.metrics) - len(shown)} metrics unchanged (--all shows them)")
    turns = Table(title="turns whose response changed (A → B)", header_style="bold")
    for col in ("turn", "onset (s)", "words", "F1 vs oracle", "reply F1", "changed"):
        turns.add_column(col, justify="left" if col == "changed" else "right")
    for t in result.turns:
        cells = [str(t.utterance)]
        for name in ("onset_s", "response_words", "f1_response", "reply_f1"):
            va, vb = (cmp.fmt(getattr(x, name), 3) if x is not None else "–" for x in (t.a, t.b))
            cells.append(va if va == vb else f"{va} → {vb}")
        turns.add_row(*cells, ", ".join(t.changed))
    if result.turns:
        console.print(turns)
    else:
        console.print("no turn's onset, response or agreement changed")
    if out is not None:
        path = cmp.plot_comparison(result.a, result.b, out, t_range=t_range)
        console.print(f"timelines: [bold]{path}[/] (A above B)")


def _compare_sweeps(
    cmp: Any, a: Path, b: Path, out: Path | None, metric: list[str] | None, all_: bool, n_boot: int, seed: int
) -> None:
    ra, rb = cmp.load_results(a), cmp.load_results(b)
    metrics = metric or (
        None if all_ else [m for m in cmp.DEFAULT_METRICS if m in ra.metrics() + rb.metrics()]
    )
    result = cmp.compare_sweeps(ra, rb, metrics, n_boot=n_boot, seed=seed)
    console.print(f"A = {ra.path}\nB = {rb.path}", highlight=False, soft_wrap=True)
    rows = result.to_pylist()
    for point in dict.fromkeys(r["point"] for r in rows):
        mine = [r for r in rows if r["point"] == point]
        methods = ", ".join(dict.fromkeys(r["ci_method"] for r in mine))
        table = Table(title=f"{point} · B − A · CI: {methods}", header_style="bold", title_justify="left")
        for col in ("metric", "runs A/B (pairs)", "mean A", "mean B", "B − A", "95% CI", ""):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for r in mine:
            ci = (
                "–"
                if r["delta_low"] is None
                else f"[{cmp.signed(r['delta_low'])}, {cmp.signed(r['delta_high'])}]"
            )
            table.add_row(
                r["metric"],
                f"{r['n_a']}/{r['n_b']} ({r['n_pairs']})",
                cmp.fmt(r["mean_a"]),
                cmp.fmt(r["mean_b"]),
                cmp.signed(r["delta"]),
                ci,
                "★" if r["significant"] else "",
            )
        console.print(table)
    n_sig = sum(bool(r["significant"]) for r in rows)
    console.print(
        f"★ {n_sig} of {len(rows)} differences have a 95% CI that excludes 0 "
        "(with nothing changed, about 5 % would by chance)"
    )
    if out is not None:
        console.print(f"table: [bold]{cmp.write_table(result, out)}[/]")


@app.command()
def fork(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="the run folder to fork (trace + scenario)")],
    at: Annotated[
        float, typer.Option("--at", help="the fork time in seconds: the branch equals RUN before it")
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="a change from the fork on: llm.ttft.median=2.0, policy.poll_interval=1.0, "
            "stream.7.ttft=3.0, stream.7.fault=0.5, stt.final.3=1.2 (repeatable; one branch)",
        ),
    ] = None,
    branch: Annotated[
        list[str] | None,
        typer.Option(help='another branch of the same prefix: "KEY=VALUE KEY=VALUE" (repeatable)'),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="output folder (default: RUN-fork-at-Ts next to RUN)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier fork's output in the folder")] = False,
    from_s: Annotated[float | None, typer.Option("--from", help="pictures start at S seconds")] = None,
    to_s: Annotated[float | None, typer.Option("--to", help="pictures end at S seconds")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Replay RUN exactly up to --at, change the back-end from there, compare the branches (docs/fork.md)."""
    from kame_sim import compare as cmp
    from kame_sim.fork.runner import branch_groups, plan_fork, run_fork

    with _user_errors():
        t_range = cmp.check_t_range(from_s, to_s)
        plan = plan_fork(run_dir, at, branch_groups(set_ or [], branch or []), out, overwrite)
        n = len(plan.branches)
        progress = _progress_bar(f"forking {n} branch{'es' if n > 1 else ''} at {at:g} s", quiet, "frames")
        with progress:
            task = progress.add_task("frames", total=None)
            results = run_fork(
                plan, lambda done, total: progress.update(task, completed=done, total=total), t_range
            )
    for r in results:
        changes = " ".join(r.branch.changes.assignments) or "nothing (the original replayed)"
        diverge = "never (identical)" if r.first_divergence is None else f"t = {r.first_divergence:.3f} s"
        console.print(f"[bold]{r.branch.name}[/]: {escape(changes)} · traces first differ at {diverge}")
        table = Table(header_style="bold")
        for col in ("metric", "original", r.branch.name, "Δ"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        changed = [m for m in r.comparison.metrics if m.changed()]
        for m in changed:
            table.add_row(m.name, cmp.fmt(m.a), cmp.fmt(m.b), cmp.signed(m.delta))
        if changed:
            console.print(table)
        console.print(
            f"{len(r.comparison.metrics) - len(changed)} metrics unchanged · trace {r.result.trace_path}"
        )
    console.print(f"fork: [bold]{plan.out}[/] (deltas.csv, fork.json, one PNG per branch)")


@app.command("fdb")
def fdb_command(
    run: Annotated[Path, typer.Argument(help="run directory or trace.arrows file")],
    audio: Annotated[
        Path | None,
        typer.Option(help="the run's --audio-out wav: also recognise the front-end's speech (FDB's way)"),
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="faster-whisper model folder (default: tiny.en)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the numbers as JSON here")] = None,
) -> None:
    """Full-Duplex-Bench turn-taking per user silence: turn ends (TOR, latency) and pauses (TOR)."""
    import json
    from dataclasses import asdict

    from kame_sim.compare import fmt, load_references
    from kame_sim.metrics.fdb import fdb_from_tokens
    from kame_sim.trace import read_trace

    with _user_errors():
        trace = read_trace(run)
        refs, why = load_references(trace)
        if refs is None:
            raise InputError(run, None, f"turn ends and pauses need the run's conversation: {why}")
        views = {"text tokens": fdb_from_tokens(trace, refs)}
        if audio is not None:
            from kame_sim.metrics.fdb_asr import fdb_from_audio

            summary, turns, _words = fdb_from_audio(trace, audio, refs, model_dir=model_dir)
            views["recognised speech"] = (summary, turns)
    table = Table(title=f"FDB turn-taking per user silence · {trace.path}", header_style="bold")
    table.add_column("turn", justify="right")
    table.add_column("silence")
    table.add_column("user end", justify="right")
    for name in views:
        for col in ("words", "span", "TOR", "latency"):
            table.add_column(f"{col} ({name})" if col == "words" else col, justify="right")
    per_view = [turns for _s, turns in views.values()]
    for k, first in enumerate(per_view[0]):
        cells = [str(first.utterance), first.label or "–", f"{first.end_s:.2f}"]
        for turns in per_view:
            t = turns[k]
            cells += [str(t.n_words), fmt(t.span_s, 3), str(int(t.took_turn)), fmt(t.latency_s, 3)]
        table.add_row(*cells)
    console.print(table)
    summary_table = Table(title="FDB v1 (turn ends: TOR ↑, latency ↓; pauses: TOR ↓)", header_style="bold")
    summary_table.add_column("")
    for name in views:
        summary_table.add_column(name, justify="right")
    rows = [s.as_row() for s, _t in views.values()]
    for key in rows[0]:
        summary_table.add_row(key, *(fmt(r[key]) for r in rows))
    console.print(summary_table)
    if json_out is not None:
        data = {
            name: {"summary": s.as_row(), "turns": [asdict(t) for t in turns]}
            for name, (s, turns) in views.items()
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        console.print(f"json: [bold]{json_out}[/]")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
