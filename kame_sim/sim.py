"""The SimPy wiring of one KAME session: processes, the frame clock and time-coupling modes.

Processes (all on one :class:`simpy.Environment` counting integer ticks, :mod:`kame_sim.clock`):

* ``user words``   one event per user word at its start time (what was said, for the trace);
* ``stt``          recogniser results at their arrival times, applied to KAME's ASR state and
                   handed to the back-end policy;
* ``policy``       the poll loop (every ``poll_interval`` it asks :mod:`kame_sim.policy.poll_loop`
                   whether to (re)start) or the multiplexer (:mod:`kame_sim.policy.multiplexer`:
                   starts on STT events and trailing timers, adopts the first newer stream that
                   speaks, cancels by its rules);
* ``llm stream``   one per started stream: time to first token, chunks, puts into the queue
                   (dropped when full under the poll loop, waiting for room under the multiplexer);
* ``frame loop``   the audio loop: frame ``k``'s audio is complete at ``(k+1)·80 ms``; the loop then
                   drains the oracle queue, applies resets/appends anchored at step ``k``, feeds the
                   oracle token, steps the front-end and feeds its words back into the conversation.

Because the drain happens when the frame loop runs, an oracle item takes effect at a frame boundary,
never mid-frame: items enqueued before step ``k`` runs are applied at ``k``; ties at the same
simulated instant are resolved by SimPy's event order, which is deterministic.

Time coupling: ``virtual`` (a step costs no simulated time: reproducible), ``budget`` (a step that
takes longer than its frame delays the following frames, as in the live server, while back-end events
keep their simulated times) and ``wall`` (SimPy's real-time environment paces the run at 1x).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
import simpy.rt

from kame_sim.clock import TICKS_PER_SECOND, frame_end_ticks, to_seconds, to_ticks
from kame_sim.config import MultiplexerPolicySettings, PollPolicySettings, Scenario
from kame_sim.conversation import Conversation, Word, user_utterances
from kame_sim.frontend.protocol import Frontend, SessionInfo
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.plan import LlmBackend, LlmStream, open_stream, warm_up
from kame_sim.oracle import OracleItem, OracleQueue, OracleState
from kame_sim.policy.asr_state import AsrState
from kame_sim.policy.conversation_log import ConversationLog
from kame_sim.policy.multiplexer import StartDecision, StreamMultiplexerPolicy
from kame_sim.policy.poll_loop import StreamManagerPolicy, poll_request
from kame_sim.replay.oracle_replay import RecordedOracleItem, oracle_replay_process
from kame_sim.stt.events import SttEvent
from kame_sim.tokenizer import TextTokenizer
from kame_sim.trace.writer import TraceWriter

ProgressCallback = Callable[[int, int], None]
SimProcess = Generator[simpy.Event, Any, None]


@dataclass
class SessionParts:
    """Everything a session needs that was prepared (and validated) before it starts."""

    scenario: Scenario
    conversation: Conversation
    tokenizer: TextTokenizer
    frontend: Frontend
    llm: LlmBackend
    stt_events: list[SttEvent]
    # Recorded oracle items to replay instead of simulating STT and LLM (replay.oracle_from).
    oracle_replay: list[RecordedOracleItem] | None = None


def voice_activity(words: tuple[Word, ...], n_frames: int, frame_seconds: float) -> np.ndarray:
    """Frames in which any of ``words`` is being spoken (a word covers the frames it overlaps).

    Frames ``floor(start / f)`` to ``ceil(end / f) - 1``, with quotients within 1e-9 of a whole
    frame taken as whole: in floats 2.32 / 0.08 is 28.999999999999996, and a word starting exactly
    where frame 29 starts (or ending where frame 7 starts, 0.56 / 0.08 = 7.000000000000001) must
    not mark the neighbouring frame.
    """
    active = np.zeros(n_frames, dtype=bool)
    for word in words:
        first = math.floor(word.start / frame_seconds + 1e-9)
        last = math.ceil(word.end / frame_seconds - 1e-9)
        active[first : min(last, n_frames)] = True
    return active


def session_frames(scenario: Scenario, conversation: Conversation) -> int:
    """How many frames a session of ``conversation`` steps (``run.max_seconds`` cuts it short)."""
    n_frames = conversation.n_frames(scenario.conversation.frame_samples)
    if scenario.run.max_seconds is not None:
        n_frames = min(n_frames, math.floor(scenario.run.max_seconds / scenario.frame_seconds + 1e-9))
    return n_frames


class Session:
    """One simulated KAME session writing its events to a trace."""

    def __init__(
        self, parts: SessionParts, trace: TraceWriter, progress: ProgressCallback | None = None
    ) -> None:
        self.parts = parts
        self.trace = trace
        self.progress = progress
        sc = parts.scenario
        self.scenario = sc
        self.frame_s = sc.frame_seconds
        conv = parts.conversation
        self.user_words = conv.words_of(sc.conversation.user_speaker)
        n_frames = session_frames(sc, conv)
        self.n_frames = n_frames
        self.end_tick = frame_end_ticks(
            n_frames - 1, sc.conversation.frame_samples, sc.conversation.sample_rate
        )
        if sc.run.time_coupling == "wall":
            # one tick is one microsecond: factor = wall seconds per simulated tick
            self.env: simpy.Environment = simpy.rt.RealtimeEnvironment(
                factor=1.0 / TICKS_PER_SECOND, strict=False
            )
        else:
            self.env = simpy.Environment()
        self.policy_settings = sc.policy
        self.multiplexed = isinstance(sc.policy, MultiplexerPolicySettings)
        self.asr = AsrState()
        self.queue = OracleQueue(sc.policy.queue_size)
        self.oracle = OracleState(parts.tokenizer.start_id, sc.oracle.padding_id)
        self.log = ConversationLog()
        self.streams: dict[int, simpy.Process] = {}  # live stream processes by generation
        self.llm_streams: dict[int, LlmStream] = {}  # their back-end streams, closed on cancel
        self.stream_count = 0
        self.late_frames = 0
        # the multiplexer's waiting puts: (generation, event) in FIFO order, and the generations
        # already woken whose put has a slot reserved but has not happened yet
        self._put_waiters: deque[tuple[int, simpy.Event]] = deque()
        self._woken: set[int] = set()
        self._active_generation = 0  # the audio loop's generation (multiplexer)
        # the frame chain (see _frame_ready): next frame, its ready tick, its drained step waiting
        # for the front-end's output, the event fired after the last frame
        self._k = 0
        self._ready = 0
        self._pending: tuple[int, int | None, int, bool] | None = None
        self._done = self.env.event()
        self._budget = sc.run.time_coupling == "budget"
        self._padding = sc.oracle.padding_id
        if isinstance(sc.policy, MultiplexerPolicySettings):
            p = sc.policy
            self.mux = StreamMultiplexerPolicy(
                min_restart_interval=to_ticks(p.min_restart_interval),
                max_concurrent_streams=p.max_concurrent_streams,
                max_prompt_chars=p.max_prompt_chars,
                trailing_start=p.trailing_start,
                final_bypass=p.final_bypass,
                skip_final_equal_to_requested=p.skip_final_equal_to_requested,
                require_user_input=p.require_user_input,
            )
            cost = to_ticks(p.drain_event_cost)
            self.drain_max = None if cost == 0 else max(1, -(-to_ticks(p.drain_budget) // cost))
        else:
            assert isinstance(sc.policy, PollPolicySettings)
            p = sc.policy
            self.poll = StreamManagerPolicy(p.restart_word_delta, p.max_starts, to_ticks(p.rate_window))
            self.drain_max = None
        # [switch]: the policy settings from tick switch_at on (kame-sim fork, docs/fork.md)
        self.switch_at = None if sc.switch.at is None else to_ticks(sc.switch.at)

    def _now_s(self) -> float:
        return self.env.now / TICKS_PER_SECOND

    # -- processes -------------------------------------------------------------------------------

    def _user_words(self) -> SimProcess:
        env, row = self.env, self.trace.row
        for u, utterance in enumerate(user_utterances(self.user_words, self.scenario.stt.utterance_gap)):
            for word in utterance:
                at = to_ticks(word.start)
                if at >= self.end_tick:
                    return
                if at > env.now:
                    yield env.timeout(at - env.now)
                row("user_word", self._now_s(), utterance=u, text=word.text, t_ref=word.end)

    def _stt(self) -> SimProcess:
        env, row, asr = self.env, self.trace.row, self.asr
        for event in self.parts.stt_events:
            at = to_ticks(event.arrival)
            if at >= self.end_tick:
                return
            if at > env.now:
                yield env.timeout(at - env.now)
            if event.kind == "partial":
                if not asr.on_partial(event.text):
                    continue  # KAME only reacts when the partial text changed
            else:
                asr.on_final(event.text)
                self.log.add("user", event.text)
            row(
                f"stt_{event.kind}",
                self._now_s(),
                utterance=event.utterance,
                text=event.text,
                delay_s=event.delay,
                t_ref=event.speech_time,
            )
            if self.multiplexed:
                conversation = self.log.text()
                if event.kind == "partial":
                    decision = self.mux.on_partial(env.now, event.text, conversation)
                else:
                    decision = self.mux.on_final(env.now, event.text, conversation)
                self._mux_decided(decision)

    # -- poll loop (kame-reference §5) --------------------------------------------------------------

    def _poll_times(self) -> Generator[int, None, None]:
        """The poll ticks: ``k * poll_interval``; a switch at T changes the interval of the sleep
        in progress (the next poll comes ``new`` after the last one, or at T if that has passed)."""
        settings = self.policy_settings
        assert isinstance(settings, PollPolicySettings)
        interval = to_ticks(settings.poll_interval)
        switch_at, new = self.switch_at, None
        if self.switch_at is not None:
            new_settings = self.scenario.switch.policy
            assert isinstance(new_settings, PollPolicySettings)
            new = to_ticks(new_settings.poll_interval)
            if switch_at == 0:
                interval = new
        last = 0
        while True:
            at = last + interval
            if switch_at is not None and new is not None and last < switch_at <= at:
                interval = new
                at = max(switch_at, last + new)
            yield at
            last = at

    def _switch_policy(self) -> SimProcess:
        """At ``switch.at``, before any other event of that tick: the new settings take effect."""
        assert self.switch_at is not None
        if self.switch_at > self.env.now:
            yield self.env.timeout(self.switch_at - self.env.now)
        self._apply_switch()

    def _apply_switch(self) -> None:
        """The pure policy object gets the new settings; its state (starts, live streams) stays."""
        p = self.scenario.switch.policy
        if isinstance(p, MultiplexerPolicySettings):
            mux = self.mux
            mux.min_restart_interval = to_ticks(p.min_restart_interval)
            mux.max_concurrent_streams = p.max_concurrent_streams
            mux.max_prompt_chars = p.max_prompt_chars
            mux.trailing_start = p.trailing_start
            mux.final_bypass = p.final_bypass
            mux.skip_final_equal_to_requested = p.skip_final_equal_to_requested
            mux.require_user_input = p.require_user_input
            cost = to_ticks(p.drain_event_cost)
            self.drain_max = None if cost == 0 else max(1, -(-to_ticks(p.drain_budget) // cost))
        else:
            assert isinstance(p, PollPolicySettings)
            self.poll.restart_word_delta = p.restart_word_delta
            self.poll.max_starts = p.max_starts
            self.poll.rate_window = to_ticks(p.rate_window)
        self.trace.row("policy_switch", self._now_s(), detail=self._switch_detail())

    def _switch_detail(self) -> str:
        before, after = self.policy_settings, self.scenario.switch.policy
        keys = [k for k in type(before).model_fields if getattr(before, k) != getattr(after, k)]
        changed = [f"{k}={getattr(after, k)!r}" for k in keys]
        return ", ".join(changed) or "no change"

    def _poll_loop(self) -> SimProcess:
        env, row = self.env, self.trace.row
        for at in self._poll_times():
            yield env.timeout(at - env.now)  # poll k at exactly k * interval (see _poll_times)
            decision = self.poll.on_tick(env.now, self.asr)
            if decision.outcome == "idle":
                continue
            now_s = self._now_s()
            if decision.outcome == "rate_limited":
                row("llm_rate_limited", now_s, word_count=decision.total_words, detail=decision.reason)
                continue
            for generation in list(self.streams):
                self._cancel(generation, "superseded")
            pending = self.asr.pending.strip()
            request = poll_request(self.log.text(), pending)
            self._start_stream(request, pending, decision.reason, decision.total_words)

    # -- multiplexer (kame-reference §5b) -----------------------------------------------------------

    def _mux_decided(self, decision: StartDecision) -> None:
        row, now_s = self.trace.row, self._now_s()
        if decision.outcome == "start":
            generation = self._start_stream(decision.request, decision.pending, decision.reason, None)
            assert generation == decision.generation
            for g in decision.limit_cancels:
                self._cancel(g, "limit")
        elif decision.outcome == "deferred":
            assert decision.at is not None
            row("llm_start_deferred", now_s, detail=decision.reason, t_ref=to_seconds(decision.at))
            self.env.process(self._trailing_start(decision.at))
        elif decision.outcome == "skipped":
            row("llm_start_skipped", now_s, detail=decision.reason)

    def _trailing_start(self, at: int) -> SimProcess:
        yield self.env.timeout(at - self.env.now)
        decision = self.mux.on_trailing(self.env.now, self.log.text())
        self._mux_decided(decision)

    # -- streams ----------------------------------------------------------------------------------

    def _start_stream(self, request_text: str, pending: str, reason: str, words: int | None) -> int:
        self.stream_count += 1
        generation = self.stream_count
        request = LlmRequest(self._now_s(), request_text, pending, generation)
        self.trace.row(
            "llm_start",
            request.now,
            stream_id=generation,
            word_count=words,
            text=pending or None,
            detail=reason,
            request=request_text,
        )
        body = self._mux_stream(request) if self.multiplexed else self._poll_stream(request)
        self.streams[generation] = self.env.process(body)
        return generation

    def _cancel(self, generation: int, reason: str) -> None:
        """Interrupt a live stream (its process closes the back-end stream) and record why."""
        # The back-end stream (a live one's HTTP stream) is closed now, not when the interrupt is
        # delivered: the session-end cancels come after the last event the environment runs.
        stream = self.llm_streams.pop(generation, None)
        if stream is not None:
            stream.close()
        process = self.streams.pop(generation, None)
        if process is None or not process.is_alive:
            return
        self._forget_waiter(generation)  # at once: a newer stream must not queue behind it
        process.interrupt(reason)
        self.trace.row("llm_cancel", self._now_s(), stream_id=generation, detail=reason)

    def _enqueue(self, action: str, text: str, sid: int) -> bool:
        """Put an item; False when the queue was full (the poll loop then drops it)."""
        now = self.env.now
        ok = self.queue.put(OracleItem(action, text, sid, now))  # type: ignore[arg-type]
        self.trace.row(
            "oracle_enqueue" if ok else "oracle_drop",
            to_seconds(now),
            stream_id=sid,
            text=text or None,
            queue_len=len(self.queue),
            detail=action,
        )
        return ok

    def _replay_put(self, action: str, text: str, sid: int) -> None:
        """A recorded queue operation: a put (which may be dropped again) or a flush."""
        if action == "flush":
            flushed = self.queue.flush()
            self.trace.row("oracle_flush", self._now_s(), stream_id=sid, queue_len=flushed)
        else:
            self._enqueue(action, text, sid)

    def _put_waiting(self, text: str, generation: int) -> SimProcess:
        """The multiplexer's ``await queue.put``: wait (FIFO) for room, then put."""
        if len(self.queue) + len(self._woken) >= self.queue.maxsize or self._put_waiters:
            began = self.env.now
            waiter = self.env.event()
            self._put_waiters.append((generation, waiter))
            try:
                yield waiter
            except simpy.Interrupt:
                self._forget_waiter(generation)
                raise
            self._woken.discard(generation)
            self.trace.row(
                "oracle_put_wait",
                self._now_s(),
                stream_id=generation,
                delay_s=to_seconds(self.env.now - began),
                t_ref=to_seconds(began),
            )
        self._enqueue("append", text, generation)

    def _forget_waiter(self, generation: int) -> None:
        """A cancelled stream's waiting put never happens: free its place and any reserved slot."""
        self._put_waiters = deque(w for w in self._put_waiters if w[0] != generation)
        self._woken.discard(generation)

    def _wake_putters(self) -> None:
        """After a drain: wake waiting puts in FIFO order, one per free slot (reserved until put)."""
        while self._put_waiters and len(self.queue) + len(self._woken) < self.queue.maxsize:
            generation, waiter = self._put_waiters.popleft()
            self._woken.add(generation)
            waiter.succeed()

    def _poll_stream(self, request: LlmRequest) -> SimProcess:
        """A poll-loop stream: reset on the first non-blank delta, every delta appended, drops on full."""
        env, row = self.env, self.trace.row
        sid, started = request.stream_id, env.now
        stream = self.llm_streams[sid] = open_stream(self.parts.llm, request)
        try:
            previous = started
            n_chunks = 0
            for chunk in stream.chunks():
                due = started + to_ticks(chunk.at)
                if due > env.now:
                    yield env.timeout(due - env.now)
                text = chunk.text.strip()
                if not text:
                    continue  # KAME skips blank deltas (the first role-only delta, whitespace)
                now_s = self._now_s()
                if n_chunks == 0:
                    row("llm_first_chunk", now_s, stream_id=sid, delay_s=to_seconds(env.now - started))
                    self._enqueue("reset", "", sid)
                row("llm_chunk", now_s, stream_id=sid, text=text, delay_s=to_seconds(env.now - previous))
                self._enqueue("append", text, sid)
                previous = env.now
                n_chunks += 1
            yield from self._stream_end(stream, sid, started, n_chunks)
        except simpy.Interrupt:
            stream.close()

    def _mux_stream(self, request: LlmRequest) -> SimProcess:
        """A multiplexer stream: adopted on its first non-blank delta if newer; raw deltas enqueued."""
        env, row = self.env, self.trace.row
        gen, started = request.stream_id, env.now
        stream = self.llm_streams[gen] = open_stream(self.parts.llm, request)
        try:
            previous = started
            n_chunks = 0
            for chunk in stream.chunks():
                due = started + to_ticks(chunk.at)
                if due > env.now:
                    yield env.timeout(due - env.now)
                text = chunk.text
                if not text.strip():
                    continue
                now_s = self._now_s()
                if n_chunks == 0:
                    ttft = to_seconds(env.now - started)
                    emit = self.mux.on_first_delta(gen)
                    row(
                        "llm_first_chunk",
                        now_s,
                        stream_id=gen,
                        delay_s=ttft,
                        detail=None if emit.adopted else "ignored",
                    )
                    if emit.adopted:
                        flushed = self.queue.flush()
                        if flushed:
                            row("oracle_flush", now_s, stream_id=gen, queue_len=flushed)
                        for g in emit.adoption_cancels:
                            self._cancel(g, "adoption")
                        for g in emit.limit_cancels:
                            self._cancel(g, "limit")
                        row("llm_adopt", now_s, stream_id=gen, delay_s=ttft)
                accepted = self.mux.accepts(gen)
                row(
                    "llm_chunk",
                    now_s,
                    stream_id=gen,
                    text=text.strip(),
                    delay_s=to_seconds(env.now - previous),
                    detail=None if accepted else "ignored",
                )
                previous = env.now
                n_chunks += 1
                if accepted:
                    yield from self._put_waiting(text, gen)
            yield from self._stream_end(stream, gen, started, n_chunks)
            self.mux.on_stream_end(gen)
        except simpy.Interrupt:
            stream.close()

    def _stream_end(self, stream: Any, sid: int, started: int, n_chunks: int) -> SimProcess:
        env = self.env
        if getattr(stream, "cut_at", None) is not None:
            # A recording cut by a cancel (cassette) ran out: nothing is known after it, so the
            # stream neither ends nor fails; it stays silent until it is cancelled.
            yield env.event()
        if stream.error is not None:
            due = started + to_ticks(stream.error_at or 0.0)
            if due > env.now:
                yield env.timeout(due - env.now)
            # KAME logs the error and keeps the oracle as it is; the next start replaces it.
            self.trace.row(
                "llm_error", self._now_s(), stream_id=sid, word_count=n_chunks, detail=stream.error
            )
        else:
            self.trace.row("llm_done", self._now_s(), stream_id=sid, word_count=n_chunks)
        self.streams.pop(sid, None)
        self.llm_streams.pop(sid, None)

    # -- the audio loop ---------------------------------------------------------------------------

    def _apply(self, item: OracleItem, k: int, now_s: float) -> int:
        """Apply one drained item at step ``k``; returns how many appended tokens were already late."""
        row, oracle = self.trace.row, self.oracle
        if item.action == "reset":
            oracle.reset(k)
            self._active_generation = max(self._active_generation, item.stream_id)
            row(
                "oracle_reset_applied",
                now_s,
                frame=k,
                stream_id=item.stream_id,
                t_ref=to_seconds(item.enqueued_at),
            )
            return 0
        if self.multiplexed:
            # KAME's opus_loop: an older generation is skipped, a newer one resets the oracle first
            if item.stream_id < self._active_generation:
                row("oracle_stale_skipped", now_s, frame=k, stream_id=item.stream_id, text=item.text)
                return 0
            if item.stream_id > self._active_generation:
                self._active_generation = item.stream_id
                oracle.reset(k)
                row(
                    "oracle_reset_applied",
                    now_s,
                    frame=k,
                    stream_id=item.stream_id,
                    t_ref=to_seconds(item.enqueued_at),
                )
        result = oracle.append(self.parts.tokenizer.encode(item.text), k)
        row(
            "oracle_append_applied",
            now_s,
            frame=k,
            stream_id=item.stream_id,
            text=item.text,
            oracle_index=result.first_index,
            n_tokens=result.n_tokens,
            n_skipped=result.n_skipped,
            t_ref=to_seconds(item.enqueued_at),
        )
        return result.n_skipped

    # The frame loop is a chain of SimPy timeouts whose callbacks the driver steps: ``next_frame``
    # runs the environment up to frame k's ready tick (every event before it, and the ones at that
    # tick that SimPy orders first), drains the oracle queue and stops the environment there, at
    # once (it steps event by event until the frame's callback has run); the driver steps the
    # front-end (alone, or batched with other replicas: kame_sim/lockstep.py); ``finish_frame``
    # writes the frame's rows, feeds the words back and schedules frame k + 1, before any other
    # event of this tick runs.
    # Event for event this is the generator frame loop it replaced: the same events are scheduled
    # in the same order, so ties at one simulated instant resolve as before.

    def _frame_start(self) -> SimProcess:
        """Schedule frame 0 from a process started last, exactly where the frame loop used to start."""
        self._wait_frame(0)
        return
        yield  # a generator: SimPy runs its body at the process's initialisation

    def _wait_frame(self, k: int, in_callback: bool = True) -> None:
        env = self.env
        if k >= self.n_frames:
            self._done.succeed()  # where the frame loop process used to end
            return
        cs = self.scenario.conversation
        ready = frame_end_ticks(k, cs.frame_samples, cs.sample_rate)
        self._ready = ready
        if env.now < ready:
            env.timeout(ready - env.now).callbacks.append(self._on_frame_ready)
        elif in_callback:
            self._on_frame_ready(None)
        else:
            self._drain_frame()  # late (budget): the frame runs at once, as the loop used to

    def _on_frame_ready(self, _event: simpy.Event | None) -> None:
        # Sets ``_pending``: :meth:`next_frame` stops stepping the environment there, back to the
        # driver before any other event (the frame's event has no other callback).
        self._drain_frame()

    def _drain_frame(self) -> None:
        """Frame ``k``'s audio is complete: drain the oracle queue and pick the token to feed."""
        k, now, ready = self._k, self.env.now, self._ready
        now_s = now / TICKS_PER_SECOND
        late = now > ready
        if late:
            self.late_frames += 1
        skipped = 0
        queue = self.queue
        if len(queue):
            for item in queue.drain(self.drain_max):
                skipped += self._apply(item, k, now_s)
            if self._put_waiters:
                self._wake_putters()
        token, index = self.oracle.token_at(k)
        self._pending = (token, index, skipped, late)

    def next_frame(self) -> int:
        """Run the environment up to the next frame's step; returns the oracle token it feeds."""
        if self._pending is None:
            # Stepping event by event until the frame is pending is what ``env.run()`` did until
            # the frame's callback raised StopSimulation, without the exception, SimPy's
            # rescheduling of the stopped event and its extra step per frame: the other events
            # are scheduled and processed in the same order, so the trace is the same.
            step = self.env.step
            try:
                while self._pending is None:
                    step()
            except simpy.core.EmptySchedule:
                pass
        assert self._pending is not None, "no frame pending: the session's frames are all done"
        return self._pending[0]

    @property
    def frame(self) -> int:
        """The index of the next frame (the one ``next_frame`` / ``finish_frame`` are about)."""
        return self._k

    def finish_frame(self, out_token: int, piece: str, cost: float) -> None:
        """Frame ``k``'s front-end output (``cost``: wall seconds of its step, batched or not)."""
        assert self._pending is not None, "next_frame first"
        token, index, skipped, late = self._pending
        self._pending = None
        k, row = self._k, self.trace.row
        now_s = self.env.now / TICKS_PER_SECOND
        row(
            "frame",
            now_s,
            frame=k,
            t_ref=self._ready / TICKS_PER_SECOND,
            detail="late" if late else None,
            step_wall_s=cost,
        )
        row("oracle_token_fed", now_s, frame=k, token_id=token, oracle_index=index, n_skipped=skipped)
        row("frontend_token", now_s, frame=k, token_id=out_token, text=piece or None)
        if out_token != self._padding and piece:
            self.log.add_piece(piece)
        if self.progress is not None and k % 250 == 0:
            self.progress(k, self.n_frames)
        self._k = k + 1
        if self._budget and cost > 0:
            # a step that took longer than its frame delays the following frames (budget coupling)
            self.env.timeout(to_ticks(cost)).callbacks.append(lambda _: self._wait_frame(k + 1))
        else:
            self._wait_frame(k + 1, in_callback=False)

    # -- driver ----------------------------------------------------------------------------------

    def _warmup(self) -> None:
        """KAME's multiplexer sends a one-token request before the session's first stream."""
        self.trace.row("llm_warmup", self._now_s(), detail=warm_up(self.parts.llm))

    def session_info(self) -> SessionInfo:
        """What the front-end is told about this session (``Frontend.start_session``)."""
        parts, cs = self.parts, self.scenario.conversation
        return SessionInfo(
            conversation=parts.conversation,
            user_channel=parts.conversation.channel_of(cs.user_speaker),
            frontend_channel=parts.conversation.channel_of(cs.frontend_speaker),
            user_speaker=cs.user_speaker,
            n_frames=self.n_frames,
            frame_seconds=self.frame_s,
            user_voice_activity=voice_activity(self.user_words, self.n_frames, self.frame_s),
        )

    def begin(self) -> None:
        """Write ``run_start`` and start the processes; the front-end's session has started."""
        parts, env = self.parts, self.env
        self.oracle.clear()
        self.trace.row("run_start", 0.0, detail=parts.frontend.name)
        if self.switch_at is not None:
            # first, so that at its tick the switch comes before every other event
            env.process(self._switch_policy())
        env.process(self._user_words())
        if parts.oracle_replay is not None:
            env.process(
                oracle_replay_process(env, parts.oracle_replay, self._replay_put, self.end_tick, to_ticks)
            )
        else:
            if self.multiplexed and isinstance(self.policy_settings, MultiplexerPolicySettings):
                if self.policy_settings.warmup:
                    self._warmup()
            else:
                env.process(self._poll_loop())
            env.process(self._stt())
        env.process(self._frame_start())

    def end(self) -> None:
        """After the last frame: run this instant's remaining events, cancel the live streams."""
        assert self._k == self.n_frames and self._pending is None, "frames left to step"
        self.env.run(until=self._done)
        self._end_streams()

    def write_run_end(self) -> None:
        if self.progress is not None:
            self.progress(self.n_frames, self.n_frames)
        self.trace.row("run_end", self._now_s(), frame=self.n_frames, detail="ok")

    def run(self) -> None:
        """Run the session to its last frame; the trace gets run_start/run_end rows around it."""
        frontend = self.parts.frontend
        info = self.session_info()
        perf = time.perf_counter
        try:
            frontend.start_session(info)
            self.begin()
            step = frontend.step
            for k in range(self.n_frames):
                token = self.next_frame()
                t0 = perf()
                out_token, piece = step(k, token)
                self.finish_frame(out_token, piece, perf() - t0)
            self.end()
        finally:
            frontend.end_session()
        self.write_run_end()

    def _end_streams(self) -> None:
        """The session ends: every stream still live is cancelled (KAME's stop())."""
        if self.multiplexed:
            self.mux.end_session()
        for generation in list(self.streams):
            self._cancel(generation, "session_end")
