"""One run, start to finish: validate every input, then simulate into a streamed trace.

Everything that can fail on bad input (scenario, conversation, tokenizer, delay parameters, the
output directory) is checked before the output directory is touched, so a bad input never leaves
a half-written run behind. Once the trace is open, rows are streamed to disk as the run goes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kame_sim import __version__
from kame_sim.config import BehaviouralSettings, KameSettings, Scenario
from kame_sim.conversation import Conversation, load_conversation
from kame_sim.conversation.loader import AUDIO_DIR, TEXT_DIR
from kame_sim.delays import component_rng
from kame_sim.errors import InputError
from kame_sim.frontend.behavioural import BehaviouralFrontend
from kame_sim.frontend.protocol import Frontend
from kame_sim.llm.cassette import CassetteLlm
from kame_sim.llm.content import LlmContentSource, OracleRawReplay, ProgressiveHintSource
from kame_sim.llm.openai_backend import OpenAiLlm, ScaledLlm, api_key_from_env
from kame_sim.llm.plan import LlmBackend, SimulatedLlm
from kame_sim.replay.oracle_replay import load_oracle_schedule
from kame_sim.run_dir import RESOLVED_SCENARIO, check_run_dir, prepare_run_dir
from kame_sim.schedule import DelaySchedule, scenario_schedule
from kame_sim.sim import ProgressCallback, Session, SessionParts
from kame_sim.stt.events import SttEvent
from kame_sim.stt.simulated import schedule_stt_events
from kame_sim.stt.whisper import check_whisper_settings, whisper_stt_events
from kame_sim.tokenizer import TextTokenizer
from kame_sim.trace.ipc_file import IPC_FILENAME, TMP_SUFFIX, write_ipc_batches, write_ipc_file
from kame_sim.trace.reader import TraceData, trace_from_batches
from kame_sim.trace.schema import TRACE_FILENAME
from kame_sim.trace.writer import KEEP_BYTES, TraceWriter

#: What a run writes into its folder (the manifest lists them; --overwrite replaces only these).
RUN_FILES = (TRACE_FILENAME, RESOLVED_SCENARIO, IPC_FILENAME, IPC_FILENAME + TMP_SUFFIX)
#: Something a prepared part must do once the run really starts (a cassette starting to record).
StartHook = Callable[[], None]


@dataclass(frozen=True)
class RunResult:
    """Where the run went, the conversation it loaded and its trace as written (a sweep's metrics
    reuse both: no second load, no reading the trace back)."""

    run_dir: Path
    trace_path: Path
    conversation_id: str
    conversation: Conversation | None = None
    #: The finished trace from the writer's batches (what ``read_trace(run_dir)`` returns), or
    #: None when the run was too long for its batches to be kept in memory.
    trace: TraceData | None = None


def load_run_conversation(scenario: Scenario) -> Conversation:
    """The scenario's conversation, with the speakers checked against the transcript.

    A conversation that would simulate nothing (audio shorter than one frame, a user who says no
    word) is refused here: it would otherwise end in a "complete" trace with nothing in it.
    """
    cs = scenario.conversation
    if cs.user_speaker == cs.frontend_speaker:
        raise InputError("<scenario>", "conversation.frontend_speaker", "must differ from user_speaker")
    speakers = ("A", "B")
    for key, value in (("user_speaker", cs.user_speaker), ("frontend_speaker", cs.frontend_speaker)):
        if value not in speakers:
            raise InputError("<scenario>", f"conversation.{key}", f"unknown speaker {value!r}; use A or B")
    conversation = load_conversation(
        cs.path,
        cs.id,
        sample_rate=cs.sample_rate,
        speakers=speakers,
        require_oracle=scenario.llm.kind == "simulated" and scenario.llm.content == "oracle_raw",
    )
    if not conversation.words_of(cs.user_speaker):
        raise InputError(
            transcript_path(conversation),
            "speaker",
            f"the user (speaker {cs.user_speaker}) says no words: there is nothing to recognise or answer",
        )
    if conversation.n_frames(cs.frame_samples) == 0:
        raise InputError(
            cs.path / AUDIO_DIR / f"{conversation.id}.wav",
            "samples",
            f"{conversation.duration_s:.3f} s of audio is shorter than one frame "
            f"({scenario.frame_seconds:g} s): the run would have no frames",
        )
    return conversation


def transcript_path(conversation: Conversation) -> Path:
    """Where the conversation's transcript was read from (for error messages)."""
    return conversation.source_dir / TEXT_DIR / f"{conversation.id}.json"


def check_padding_id(scenario: Scenario, tokenizer: TextTokenizer) -> None:
    """``oracle.padding_id`` must be one of the tokenizer's ids (START and beyond are not pieces)."""
    padding_id = scenario.oracle.padding_id
    if not 0 <= padding_id < tokenizer.vocab_size:
        raise InputError(
            "<scenario>",
            "oracle.padding_id",
            f"{padding_id} is outside the tokenizer's vocabulary (ids 0..{tokenizer.vocab_size - 1} "
            f"of {tokenizer.path.name})",
        )


def build_frontend(scenario: Scenario, audio_out: Path | None = None) -> tuple[Frontend, TextTokenizer]:
    """The scenario's front-end and the tokenizer oracle text must be encoded with.

    The real front-end (torch, moshi: seconds to import) is imported only when a scenario asks for
    it; that is the one import kept inside a function. Its tokenizer is the
    checkpoint's unless ``oracle.tokenizer`` names another one of the same vocabulary size.
    """
    settings = scenario.frontend
    if isinstance(settings, BehaviouralSettings):
        if audio_out is not None:
            raise InputError("<cli>", "--audio-out", "needs frontend.kind = 'kame' (no audio from the model)")
        tokenizer = TextTokenizer.load(scenario.oracle.tokenizer)
        check_padding_id(scenario, tokenizer)
        return BehaviouralFrontend(settings, tokenizer, scenario.oracle.padding_id), tokenizer
    from kame_sim.frontend.kame.frontend import KameFrontend
    from kame_sim.frontend.kame.model_cache import cached_load_kame

    loaded = cached_load_kame(settings)  # a sweep worker loads each checkpoint once
    tokenizer = loaded.tokenizer
    if scenario.oracle.tokenizer is not None:
        tokenizer = TextTokenizer.load(scenario.oracle.tokenizer)
        if tokenizer.vocab_size != loaded.lm.text_card:
            message = f"{tokenizer.vocab_size} pieces but the checkpoint's text_card is {loaded.lm.text_card}"
            raise InputError(scenario.oracle.tokenizer, "vocab_size", message)
    check_padding_id(scenario, tokenizer)
    sampling_seed = int(component_rng(scenario.run.seed, "frontend.sampling").integers(2**31))
    return KameFrontend(settings, loaded, sampling_seed, audio_out), tokenizer


def check_checkpoint_files(settings: KameSettings) -> None:
    """A real front-end's checkpoint folder, config, named files and device, checked without
    loading a weight: what a sweep checks once per checkpoint before it writes anything, so a
    missing checkpoint is one line and exit 2 instead of every run failing in its worker.
    (torch comes with the checkpoint module: imported here, as in :func:`build_frontend`.)
    """
    from kame_sim.frontend.kame.checkpoint import read_checkpoint, resolve_device

    read_checkpoint(settings.checkpoint)
    resolve_device(settings.device, "frontend.device")


def build_llm(
    scenario: Scenario,
    conversation: Conversation,
    environ: Mapping[str, str] | None = None,
    schedule: DelaySchedule | None = None,
    on_start: list[StartHook] | None = None,
) -> LlmBackend:
    """The scenario's LLM back-end: simulated or live, behind a cassette and a time scale if asked.

    Built at prepare time, so a live back-end without its key (``llm.api_key_env`` unset) is an
    InputError before anything is written. An unreachable endpoint is not checked here: each stream
    then ends in an ``llm_error`` event, as a live KAME server would log it and carry on. A pure
    replay (``cassette_mode = "replay"``, ``on_miss = "error"``) builds no back-end at all, so it
    needs neither a key nor a network. A cassette is only read here; what it changes in its file
    happens in the hook it adds to ``on_start`` (when the run starts), or on its first recording.
    """
    settings, seed = scenario.llm, scenario.run.seed
    pure_replay = (
        settings.cassette is not None and settings.cassette_mode == "replay" and settings.on_miss == "error"
    )
    inner: LlmBackend | None = None
    if pure_replay:
        inner = None
    elif settings.kind == "openai":
        inner = OpenAiLlm.from_settings(settings, environ)
    else:
        cs = scenario.conversation
        content: LlmContentSource
        if settings.content == "oracle_raw":
            content = OracleRawReplay(conversation, conversation.channel_of(cs.frontend_speaker))
        else:
            content = ProgressiveHintSource(
                conversation,
                cs.user_speaker,
                cs.frontend_speaker,
                scenario.stt.utterance_gap,
                component_rng(seed, "llm.content"),
                settings.max_reply_words,
            )
        inner = SimulatedLlm(
            content,
            settings.ttft.sampler(component_rng(seed, "llm.ttft")),
            settings.inter_chunk.sampler(component_rng(seed, "llm.inter_chunk")),
            settings.words_per_chunk,
            schedule,
        )
    llm: LlmBackend | None = inner
    if settings.cassette is not None:
        cassette = CassetteLlm(
            inner,
            settings.cassette,
            settings.cassette_mode,
            settings.on_miss,
            model=settings.model,
            system_prompt=settings.system_prompt,
        )
        if on_start is not None:
            on_start.append(cassette.start)
        llm = cassette
    assert llm is not None
    if settings.time_scale != 1.0:
        llm = ScaledLlm(llm, settings.time_scale)
    return llm


def build_stt_events(
    scenario: Scenario,
    conversation: Conversation,
    schedule: DelaySchedule | None = None,
    on_start: list[StartHook] | None = None,
) -> list[SttEvent]:
    """The user channel's STT results: simulated from the word timestamps, or faster-whisper."""
    if scenario.stt.kind == "whisper":
        return whisper_stt_events(scenario, conversation, on_start)
    return schedule_stt_events(
        conversation.words_of(scenario.conversation.user_speaker),
        scenario.stt.utterance_gap,
        scenario.stt.partial_delay.sampler(component_rng(scenario.run.seed, "stt.partial")),
        scenario.stt.final_delay.sampler(component_rng(scenario.run.seed, "stt.final")),
        scenario.stt.emit_partials,
        schedule,
        source=transcript_path(conversation),
    )


def needs_audio(scenario: Scenario) -> bool:
    """Whether a run reads the conversation's samples: the real front-end (Mimi encodes the user
    channel, ``--audio-out`` mixes it) or the whisper STT. Everything else works from the
    transcript's word times."""
    return not isinstance(scenario.frontend, BehaviouralSettings) or scenario.stt.kind == "whisper"


def build_session_parts(
    scenario: Scenario,
    conversation: Conversation,
    audio_out: Path | None = None,
    schedule: DelaySchedule | None = None,
    on_start: list[StartHook] | None = None,
) -> SessionParts:
    """Prepare the session: tokenizer, front-end, content source and all per-component draws.

    ``schedule``: the scenario's ``delays.schedule`` already loaded; loaded (and validated) here
    when not given. Writes nothing when ``on_start`` is given: what a part must write (cassettes in
    record mode) is added to it as a hook, for :func:`run_scenario` to call once every check has
    passed. ``kame-sim validate`` passes a list and drops it. Without ``on_start`` cassettes write
    as they go.
    A scenario that reads the audio has it decoded here first, so bad samples
    (NaN, infinity) fail before the model loads and before anything is written; a behavioural
    run with simulated STT never decodes it (:func:`needs_audio`).
    """
    if schedule is None:
        schedule = scenario_schedule(scenario)
    if needs_audio(scenario):
        conversation.load_audio()
    frontend, tokenizer = build_frontend(scenario, audio_out)
    stt_events = build_stt_events(scenario, conversation, schedule, on_start)
    llm = build_llm(scenario, conversation, schedule=schedule, on_start=on_start)
    oracle_replay = None
    if scenario.replay.oracle_from is not None:
        oracle_replay = load_oracle_schedule(scenario.replay.oracle_from)
    return SessionParts(
        scenario=scenario,
        conversation=conversation,
        tokenizer=tokenizer,
        frontend=frontend,
        llm=llm,
        stt_events=stt_events,
        oracle_replay=oracle_replay,
    )


def check_inputs(scenario: Scenario, conversation: Conversation) -> None:
    """Everything a run checks before it starts, without running or changing anything.

    What ``kame-sim validate`` does: the schedule, the front-end (a real one's checkpoint is
    loaded), the simulated STT's draws, a whisper STT's model folder and settings (no audio is
    decoded), the LLM settings (a live back-end's key is looked up, nothing is sent, no client is
    built), cassettes that a replay needs, and the oracle replay. Cassettes are only checked to
    exist: opening one repairs a torn tail, and ``record`` mode would delete it.
    """
    schedule = scenario_schedule(scenario)
    build_frontend(scenario)
    if scenario.stt.kind == "whisper":
        check_whisper_settings(scenario)
    else:
        build_stt_events(scenario, conversation, schedule)
    settings = scenario.llm
    if (
        settings.cassette is not None
        and settings.cassette_mode == "replay"
        and not settings.cassette.is_file()
    ):
        raise InputError(
            settings.cassette, "llm.cassette", "cassette not found (record one with cassette_mode = 'record')"
        )
    pure_replay = (
        settings.cassette is not None and settings.cassette_mode == "replay" and settings.on_miss == "error"
    )
    if settings.kind == "openai" and not pure_replay:
        api_key_from_env(settings)
    elif settings.kind == "simulated" and not pure_replay:
        build_llm(
            scenario.model_copy(update={"llm": settings.model_copy(update={"cassette": None})}), conversation
        )
    if scenario.replay.oracle_from is not None:
        load_oracle_schedule(scenario.replay.oracle_from)


def default_run_dir(scenario: Scenario, conversation_id: str) -> Path:
    """``<output_dir>/<name>-<conversation>-seed<seed>``: one directory per (scenario, conversation, seed)."""
    return scenario.run.output_dir / f"{scenario.run.name}-{conversation_id}-seed{scenario.run.seed}"


def trace_metadata(
    scenario: Scenario,
    conversation: Conversation,
    tokenizer: TextTokenizer,
    schedule: DelaySchedule | None = None,
) -> dict[str, str]:
    """Schema metadata: what produced this trace, enough to reproduce it.

    A run with ``delays.schedule`` records the file and its sha256 (``schedule``: it loaded, or
    loaded again here).
    """
    meta = {
        "kame_sim.version": __version__,
        "kame_sim.scenario": scenario.resolved_json(),
        "kame_sim.seed": str(scenario.run.seed),
        "kame_sim.conversation_id": conversation.id,
        "kame_sim.conversation_hash": conversation.content_hash,
        "kame_sim.policy": scenario.policy.kind,
        "kame_sim.tokenizer_sha256": tokenizer.sha256(),
        "kame_sim.frame_seconds": repr(scenario.frame_seconds),
        "kame_sim.time_coupling": scenario.run.time_coupling,
        "kame_sim.frontend": scenario.frontend.kind,
        "kame_sim.tokenizer_vocab": str(tokenizer.vocab_size),
    }
    if scenario.delays.schedule is not None:
        if schedule is None:
            schedule = scenario_schedule(scenario)
        assert schedule is not None and schedule.sha256 is not None
        meta["kame_sim.schedule"] = str(scenario.delays.schedule)
        meta["kame_sim.schedule_sha256"] = schedule.sha256
    return meta


def check_output_file(path: Path | None, overwrite: bool, field: str) -> None:
    """A single output file named on the command line: not a folder, and an existing file is
    replaced only with ``--overwrite`` (kame-sim cannot tell whose a wav is)."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(path, field, "is a folder; give a file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(path, field, f"{path.parent} is a file, not a folder")
    if path.exists() and not overwrite:
        raise InputError(path, field, "already exists; pass --overwrite to replace it")


def run_scenario(
    scenario: Scenario,
    run_dir: Path | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    audio_out: Path | None = None,
    metadata: Mapping[str, str] | None = None,
    also_record: Sequence[str] = (),
) -> RunResult:
    """Validate, prepare, simulate. The trace is closed (and flushed) even if the run crashes.

    ``metadata`` adds schema metadata (a sweep's ``kame_sim.run_id`` and ``kame_sim.parameters``).
    ``also_record``: files the caller writes into the run folder afterwards (a sweep's
    ``metrics.json``), listed in its manifest with the run's own, in one manifest write.
    Only a run that ends normally also gets ``trace.arrow``, the IPC-file copy of the stream.

    Order: every check (output folder and files first, they are cheap), then the session parts
    (which write nothing), then the output folder is cleared of the previous run's files and the
    start hooks run (cassettes start recording). A failure before the trace is open leaves nothing
    behind; after, a readable partial trace.
    """
    conversation = load_run_conversation(scenario)
    run_dir = run_dir or default_run_dir(scenario, conversation.id)
    check_run_dir(run_dir, overwrite, RUN_FILES)
    check_output_file(audio_out, overwrite, "--audio-out")
    schedule = scenario_schedule(scenario)
    on_start: list[StartHook] = []
    parts = build_session_parts(scenario, conversation, audio_out, schedule, on_start)
    out = prepare_run_dir(run_dir, overwrite, RUN_FILES)
    trace: TraceWriter | None = None
    try:
        # trace.arrow is written at the end (through a temporary name, also listed); one
        # manifest write lists all four
        resolved, trace_file, *_ = out.record_all(
            (RESOLVED_SCENARIO, TRACE_FILENAME, IPC_FILENAME, IPC_FILENAME + TMP_SUFFIX, *also_record)
        )
        resolved_text = json.dumps(json.loads(scenario.resolved_json()), indent=2) + "\n"
        resolved.write_text(resolved_text, encoding="utf-8")
        meta = {**trace_metadata(scenario, conversation, parts.tokenizer, schedule), **(metadata or {})}
        trace = TraceWriter(trace_file, meta, keep_bytes=KEEP_BYTES)
        for hook in on_start:
            hook()
    except BaseException:
        if trace is not None:
            trace.close()
        out.rollback()
        raise
    out.commit()
    with trace:
        Session(parts, trace, progress).run()
    written: TraceData | None = None
    if trace.batches is None:
        write_ipc_file(trace_file)
    else:
        write_ipc_batches(trace_file, trace.schema, trace.batches)
        written = trace_from_batches(trace_file, trace.schema, trace.batches)
    return RunResult(run_dir, trace_file, conversation.id, conversation, written)
