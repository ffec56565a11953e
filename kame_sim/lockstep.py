"""Lockstep replicas: B sessions in one process, one batched front-end step per frame.

Each replica is a whole :class:`kame_sim.sim.Session`: its own SimPy environment, back-end
processes (STT, policy, LLM streams), random streams (its own seed), oracle queue and state,
conversation log and trace. At every frame boundary the driver runs each replica's environment up
to that frame's step (:meth:`Session.next_frame`: every event before the frame's ready tick, the
drain of its oracle queue), collects the B oracle tokens, takes ONE front-end step for the batch
(:mod:`kame_sim.frontend.batch`: the real KAME front-end batches the LM step, B = replicas; the
behavioural one loops) and hands each replica its own output (:meth:`Session.finish_frame`), so
each replica's back-end reacts to what its own front-end said. A solo run
(:meth:`Session.run`) goes through the same ``next_frame`` / ``finish_frame`` calls.

Time coupling: ``virtual`` (reproducible). ``budget``: every replica is charged the wall time of
the whole batch step (as B sessions sharing one server's batched step would be). ``wall`` paces
one environment at 1x and is refused for more than one replica.

Sampling does not depend on the batch: replica ``i`` draws from its own ``torch.Generator``
seeded from its own run seed (:class:`kame_sim.frontend.kame.frontend.KameBatchFrontend`). Batched
float arithmetic may still differ from B = 1 in the last bits; docs/lockstep.md gives the measured
divergence and the trace metadata says so (``kame_sim.batch_numerics``).

Entry points: :func:`run_batch` (one scenario per replica, any settings that keep the front-end
and the number of frames the same: what a sweep can batch later) and :func:`replica_scenarios`
(``kame-sim run --replicas N``: seeds seed, seed + 1, ...).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from kame_sim.config import MAX_SEED, BehaviouralSettings, KameSettings, Scenario
from kame_sim.conversation import Conversation
from kame_sim.delays import component_rng
from kame_sim.errors import InputError
from kame_sim.frontend.batch import BatchFrontend, LoopedBatch, ReplicaView
from kame_sim.frontend.protocol import Frontend
from kame_sim.replay.oracle_replay import load_oracle_schedule
from kame_sim.run_dir import RESOLVED_SCENARIO, check_run_dir, prepare_run_dir
from kame_sim.runner import (
    RUN_FILES,
    RunResult,
    StartHook,
    build_frontend,
    build_llm,
    build_stt_events,
    check_padding_id,
    default_run_dir,
    load_run_conversation,
    trace_metadata,
)
from kame_sim.schedule import scenario_schedule
from kame_sim.sim import ProgressCallback, Session, SessionParts, session_frames
from kame_sim.tokenizer import TextTokenizer
from kame_sim.trace.ipc_file import write_ipc_file
from kame_sim.trace.schema import TRACE_FILENAME
from kame_sim.trace.writer import TraceWriter

# Recorded in every lockstep trace (docs/lockstep.md has the measurements behind it).
BATCH_NUMERICS = {
    "behavioural": "exact: replicas are independent front-ends, identical to solo runs",
    "kame": (
        "per-replica torch.Generator sampling; batched LM arithmetic may differ from B=1 in the last "
        "float bits and so flip a near-tied token (see docs/lockstep.md for the measured rate)"
    ),
}


def replica_scenarios(scenario: Scenario, n: int) -> list[Scenario]:
    """``n`` copies of ``scenario`` with seeds ``seed, seed + 1, ..., seed + n - 1``."""
    if n < 1:
        raise InputError("<cli>", "--replicas", f"must be at least 1, got {n}")
    seed = scenario.run.seed
    if seed + n - 1 > MAX_SEED:
        raise InputError(
            "<cli>", "--replicas", f"seeds {seed}..{seed + n - 1} pass the largest seed {MAX_SEED}"
        )
    return [
        scenario.model_copy(update={"run": scenario.run.model_copy(update={"seed": seed + i})})
        for i in range(n)
    ]


def _check_batchable(scenarios: Sequence[Scenario]) -> None:
    first = scenarios[0]
    if len(scenarios) > 1:
        for sc in scenarios:
            if sc.run.time_coupling == "wall":
                raise InputError(
                    "<scenario>",
                    "run.time_coupling",
                    "'wall' paces one environment at 1x real time; lockstep replicas run in 'virtual' "
                    "or 'budget' (each replica is charged the whole batch step)",
                )
    for i, sc in enumerate(scenarios[1:], start=1):
        if sc.frontend != first.frontend:
            raise InputError(
                "<scenario>",
                "frontend",
                f"replica {i}'s front-end settings differ from replica 0's: a "
                "batch steps one front-end (one checkpoint, one set of sampling settings)",
            )


def _kame_tokenizer(scenario: Scenario, loaded: object) -> TextTokenizer:
    """The oracle tokenizer of a kame scenario: the checkpoint's, or ``oracle.tokenizer`` (same size)."""
    tokenizer: TextTokenizer = loaded.tokenizer  # type: ignore[attr-defined]
    if scenario.oracle.tokenizer is not None:
        tokenizer = TextTokenizer.load(scenario.oracle.tokenizer)
        text_card = loaded.lm.text_card  # type: ignore[attr-defined]
        if tokenizer.vocab_size != text_card:
            message = f"{tokenizer.vocab_size} pieces but the checkpoint's text_card is {text_card}"
            raise InputError(scenario.oracle.tokenizer, "vocab_size", message)
    check_padding_id(scenario, tokenizer)
    return tokenizer


def build_batch_frontend(scenarios: Sequence[Scenario]) -> tuple[BatchFrontend, list[TextTokenizer]]:
    """One batch front-end for the replicas (the checkpoint is loaded once) and each one's tokenizer."""
    settings = scenarios[0].frontend
    if isinstance(settings, BehaviouralSettings):
        built = [build_frontend(sc) for sc in scenarios]
        frontends: list[Frontend] = [f for f, _ in built]
        return LoopedBatch(frontends), [t for _, t in built]
    assert isinstance(settings, KameSettings)
    from kame_sim.frontend.kame.frontend import KameBatchFrontend
    from kame_sim.frontend.kame.model_cache import cached_load_kame

    loaded = cached_load_kame(settings)
    tokenizers = [_kame_tokenizer(sc, loaded) for sc in scenarios]
    # the seed a solo run of the same scenario gets (runner.build_frontend)
    seeds = [int(component_rng(sc.run.seed, "frontend.sampling").integers(2**31)) for sc in scenarios]
    return KameBatchFrontend(settings, loaded, seeds), tokenizers


def run_batch(
    scenarios: Sequence[Scenario],
    run_dirs: Sequence[Path | None] | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    metadata: Sequence[Mapping[str, str] | None] | None = None,
) -> list[RunResult]:
    """Run ``scenarios[i]`` into ``run_dirs[i]`` as lockstep replicas of one batch.

    The replicas must share the front-end settings and the number of frames (same conversation
    and ``run.max_seconds``, typically); anything else (seed, delays, policy, LLM) may differ.
    ``run_dirs[i]`` None (or ``run_dirs`` None) is the solo run's default directory. Every input
    is validated before any directory is touched. Each replica writes the trace a solo run writes
    (same schema, ``run_start`` / ``run_end``), plus ``kame_sim.batch_size``,
    ``kame_sim.replica_index`` and ``kame_sim.batch_numerics`` metadata; ``metadata[i]`` adds more.
    ``progress`` follows replica 0. A crash or kill leaves every replica's partial trace readable.
    """
    n = len(scenarios)
    if n == 0:
        raise ValueError("run_batch needs at least one scenario")
    dirs = list(run_dirs) if run_dirs is not None else [None] * n
    extra = list(metadata) if metadata is not None else [None] * n
    if len(dirs) != n or len(extra) != n:
        raise ValueError(f"{n} scenarios but {len(dirs)} run dirs and {len(extra)} metadata entries")
    _check_batchable(scenarios)
    conversations: dict[str, Conversation] = {}
    convs = []
    for sc in scenarios:
        key = json.dumps(
            [
                str(sc.conversation.path),
                sc.conversation.id,
                sc.conversation.sample_rate,
                sc.conversation.user_speaker,
                sc.conversation.frontend_speaker,
                sc.llm.kind,
                sc.llm.content,
            ]
        )
        if key not in conversations:
            conversations[key] = load_run_conversation(sc)
        convs.append(conversations[key])
    frames = {session_frames(sc, conv) for sc, conv in zip(scenarios, convs, strict=True)}
    if len(frames) != 1:
        raise InputError(
            "<scenario>",
            "run.max_seconds",
            f"lockstep replicas must step the same number of frames, got "
            f"{sorted(frames)} (same conversation and run.max_seconds)",
        )
    out = [d or default_run_dir(sc, conv.id) for d, sc, conv in zip(dirs, scenarios, convs, strict=True)]
    if len({d.resolve() for d in out}) != n:
        raise InputError("<cli>", "--out", "two replicas would share a run directory")
    for d in out:
        check_run_dir(d, overwrite, RUN_FILES)  # every folder checked before anything is written
    schedules = [scenario_schedule(sc) for sc in scenarios]
    batch, tokenizers = build_batch_frontend(scenarios)
    on_start: list[StartHook] = []  # cassette writes, run once every check has passed
    parts = []
    for i, (sc, conv, schedule) in enumerate(zip(scenarios, convs, schedules, strict=True)):
        replay = load_oracle_schedule(sc.replay.oracle_from) if sc.replay.oracle_from is not None else None
        parts.append(
            SessionParts(
                scenario=sc,
                conversation=conv,
                tokenizer=tokenizers[i],
                frontend=ReplicaView(batch, i),
                llm=build_llm(sc, conv, schedule=schedule, on_start=on_start),
                stt_events=build_stt_events(sc, conv, schedule, on_start),
                oracle_replay=replay,
            )
        )
    for d, sc in zip(out, scenarios, strict=True):
        folder = prepare_run_dir(d, overwrite, RUN_FILES)
        folder.record(RESOLVED_SCENARIO).write_text(
            json.dumps(json.loads(sc.resolved_json()), indent=2) + "\n", encoding="utf-8"
        )
        for name in RUN_FILES:
            folder.record(name)
        folder.commit()
    for hook in on_start:
        hook()
    numerics = BATCH_NUMERICS[scenarios[0].frontend.kind]
    with contextlib.ExitStack() as stack:
        sessions = []
        for i, (p, d, meta) in enumerate(zip(parts, out, extra, strict=True)):
            trace_meta = {
                **trace_metadata(p.scenario, p.conversation, p.tokenizer, schedules[i]),
                "kame_sim.batch_size": str(n),
                "kame_sim.replica_index": str(i),
                "kame_sim.batch_numerics": numerics,
                **(meta or {}),
            }
            trace = stack.enter_context(TraceWriter(d / TRACE_FILENAME, trace_meta))
            sessions.append(Session(p, trace, progress if i == 0 else None))
        step_lockstep(sessions, batch)
    for d in out:
        write_ipc_file(d / TRACE_FILENAME)
    return [RunResult(d, d / TRACE_FILENAME, conv.id, conv) for d, conv in zip(out, convs, strict=True)]


def step_lockstep(sessions: Sequence[Session], batch: BatchFrontend) -> None:
    """Drive ``sessions`` (same number of frames) frame by frame through one batch front-end."""
    n_frames = sessions[0].n_frames
    assert all(s.n_frames == n_frames for s in sessions)
    perf = time.perf_counter
    try:
        batch.start_sessions([s.session_info() for s in sessions])
        for s in sessions:
            s.begin()
        step = batch.step_batch
        for k in range(n_frames):
            tokens = [s.next_frame() for s in sessions]
            t0 = perf()
            outs = step(k, tokens)
            cost = perf() - t0
            for s, (token, piece) in zip(sessions, outs, strict=True):
                s.finish_frame(token, piece, cost)
        for s in sessions:
            s.end()
    finally:
        batch.end_sessions()
    for s in sessions:
        s.write_run_end()
