"""The SimPy wiring of one KAME session: processes, the frame clock and time-coupling modes.

Processes (all on one :class:`simpy.Environment`, so simulated time is the only clock):

* ``user words``     one event per user word at its start time (what was said, for the trace);
* ``stt``            recogniser results at their simulated arrival times, applied to KAME's ASR state;
* ``stream manager`` KAME's poll loop: every ``poll_interval`` it asks the policy whether to (re)start;
* ``llm stream``     one per started stream: time to first token, chunks, cancellation by a newer one;
* ``frame loop``     the audio loop: frame ``k``'s audio is complete at ``(k+1)·80 ms``; the loop then
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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy
import simpy.rt

from kame_sim.config import Scenario
from kame_sim.conversation import Conversation, Word, user_utterances
from kame_sim.frontend.protocol import Frontend, SessionInfo
from kame_sim.llm.content import LlmRequest
from kame_sim.llm.plan import LlmBackend
from kame_sim.oracle import OracleItem, OracleQueue, OracleState
from kame_sim.policy.asr_state import AsrState
from kame_sim.policy.conversation_log import ConversationLog
from kame_sim.policy.poll_loop import StreamManagerPolicy
from kame_sim.replay.oracle_replay import RecordedOracleItem, oracle_replay_process
from kame_sim.stt.events import SttEvent
from kame_sim.tokenizer import TextTokenizer
from kame_sim.trace.writer import TraceWriter

ProgressCallback = Callable[[int, int], None]


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
        n_frames = conv.n_frames(sc.conversation.frame_samples)
        if sc.run.max_seconds is not None:
            n_frames = min(n_frames, math.floor(sc.run.max_seconds / self.frame_s + 1e-9))
        self.n_frames = n_frames
        self.end_time = n_frames * self.frame_s
        if sc.run.time_coupling == "wall":
            self.env: simpy.Environment = simpy.rt.RealtimeEnvironment(factor=1.0, strict=False)
        else:
            self.env = simpy.Environment()
        self.asr = AsrState()
        self.policy = StreamManagerPolicy(
            sc.policy.restart_word_delta, sc.policy.max_starts, sc.policy.rate_window
        )
        self.queue = OracleQueue(sc.policy.queue_size)
        self.oracle = OracleState(parts.tokenizer.start_id, sc.oracle.padding_id)
        self.log = ConversationLog()
        self.active_stream: simpy.Process | None = None
        self.active_stream_id = 0
        self.stream_count = 0
        self.late_frames = 0

    # -- processes -------------------------------------------------------------------------------

    def _user_words(self):
        env, row = self.env, self.trace.row
        for u, utterance in enumerate(user_utterances(self.user_words, self.scenario.stt.utterance_gap)):
            for word in utterance:
                if word.start >= self.end_time:
                    return
                if word.start > env.now:
                    yield env.timeout(word.start - env.now)
                row("user_word", env.now, utterance=u, text=word.text, t_ref=word.end)

    def _stt(self):
        env, row, asr = self.env, self.trace.row, self.asr
        for event in self.parts.stt_events:
            if event.arrival >= self.end_time:
                return
            if event.arrival > env.now:
                yield env.timeout(event.arrival - env.now)
            if event.kind == "partial":
                if not asr.on_partial(event.text):
                    continue  # KAME only reacts when the partial text changed
            else:
                asr.on_final(event.text)
                self.log.add("user", event.text)
            row(
                f"stt_{event.kind}",
                env.now,
                utterance=event.utterance,
                text=event.text,
                delay_s=event.delay,
                t_ref=event.speech_time,
            )

    def _stream_manager(self):
        env, row = self.env, self.trace.row
        poll = self.scenario.policy.poll_interval
        while True:
            yield env.timeout(poll)
            decision = self.policy.on_tick(env.now, self.asr)
            if decision.outcome == "idle":
                continue
            if decision.outcome == "rate_limited":
                row("llm_rate_limited", env.now, word_count=decision.total_words, detail=decision.reason)
                continue
            if self.active_stream is not None and self.active_stream.is_alive:
                self.active_stream.interrupt("superseded")
                row("llm_cancel", env.now, stream_id=self.active_stream_id, detail="superseded")
            self.stream_count += 1
            sid = self.stream_count
            pending = self.asr.pending.strip()
            conversation = self.log.text().rstrip()
            if pending:
                # KAME's poll-loop server always adds the newline, even to an empty conversation.
                conversation += f"\nuser: {pending} "
            request = LlmRequest(env.now, conversation, pending, sid)
            row("llm_start", env.now, stream_id=sid, word_count=decision.total_words, detail=decision.reason)
            self.active_stream_id = sid
            self.active_stream = env.process(self._llm_stream(request))

    def _enqueue(self, action: str, text: str, sid: int) -> None:
        now = self.env.now
        ok = self.queue.put(OracleItem(action, text, sid, now))  # type: ignore[arg-type]
        self.trace.row(
            "oracle_enqueue" if ok else "oracle_drop",
            now,
            stream_id=sid,
            text=text or None,
            queue_len=len(self.queue),
            detail=action,
        )

    def _llm_stream(self, request: LlmRequest):
        env, row = self.env, self.trace.row
        sid, started = request.stream_id, env.now
        try:
            plan = self.parts.llm.plan(request)
            previous = started
            n_chunks = 0
            for chunk in plan.chunks:
                if plan.error_at is not None and chunk.at > plan.error_at:
                    break
                due = started + chunk.at
                if due > env.now:
                    yield env.timeout(due - env.now)
                text = chunk.text.strip()
                if not text:
                    continue  # KAME skips blank deltas (the first role-only delta, whitespace)
                if n_chunks == 0:
                    row("llm_first_chunk", env.now, stream_id=sid, delay_s=env.now - started)
                    self._enqueue("reset", "", sid)
                row("llm_chunk", env.now, stream_id=sid, text=text, delay_s=env.now - previous)
                self._enqueue("append", text, sid)
                previous = env.now
                n_chunks += 1
            if plan.error is not None:
                due = started + (plan.error_at or 0.0)
                if due > env.now:
                    yield env.timeout(due - env.now)
                # KAME logs the error and keeps the oracle as it is; the next start replaces it.
                row("llm_error", env.now, stream_id=sid, word_count=n_chunks, detail=plan.error)
            else:
                row("llm_done", env.now, stream_id=sid, word_count=n_chunks)
        except simpy.Interrupt:
            return

    def _frame_loop(self):
        env, row = self.env, self.trace.row
        oracle, queue, encode = self.oracle, self.queue, self.parts.tokenizer.encode
        step_frontend = self.parts.frontend.step
        add_piece = self.log.add_piece
        fs, budget = self.frame_s, self.scenario.run.time_coupling == "budget"
        padding = self.scenario.oracle.padding_id
        progress, report_every = self.progress, 250
        perf = time.perf_counter
        for k in range(self.n_frames):
            ready = (k + 1) * fs
            if env.now < ready:
                yield env.timeout(ready - env.now)
            now = env.now
            late = now - ready > 1e-9
            if late:
                self.late_frames += 1
            skipped = 0
            if len(queue):
                for item in queue.drain():
                    if item.action == "reset":
                        oracle.reset(k)
                        row(
                            "oracle_reset_applied",
                            now,
                            frame=k,
                            stream_id=item.stream_id,
                            t_ref=item.enqueued_at,
                        )
                    else:
                        result = oracle.append(encode(item.text), k)
                        skipped += result.n_skipped
                        row(
                            "oracle_append_applied",
                            now,
                            frame=k,
                            stream_id=item.stream_id,
                            text=item.text,
                            oracle_index=result.first_index,
                            n_tokens=result.n_tokens,
                            n_skipped=result.n_skipped,
                            t_ref=item.enqueued_at,
                        )
            token, index = oracle.token_at(k)
            t0 = perf()
            out_token, piece = step_frontend(k, token)
            cost = perf() - t0
            row("frame", now, frame=k, t_ref=ready, detail="late" if late else None, step_wall_s=cost)
            row("oracle_token_fed", now, frame=k, token_id=token, oracle_index=index, n_skipped=skipped)
            row("frontend_token", now, frame=k, token_id=out_token, text=piece or None)
            if out_token != padding and piece:
                add_piece(piece)
            if progress is not None and k % report_every == 0:
                progress(k, self.n_frames)
            if budget and cost > 0:
                yield env.timeout(cost)

    # -- driver ----------------------------------------------------------------------------------

    def run(self) -> None:
        """Run the session to its last frame; the trace gets run_start/run_end rows around it."""
        parts, env = self.parts, self.env
        self.oracle.clear()
        session = SessionInfo(
            conversation=parts.conversation,
            user_channel=parts.conversation.channel_of(self.scenario.conversation.user_speaker),
            frontend_channel=parts.conversation.channel_of(self.scenario.conversation.frontend_speaker),
            user_speaker=self.scenario.conversation.user_speaker,
            n_frames=self.n_frames,
            frame_seconds=self.frame_s,
            user_voice_activity=voice_activity(self.user_words, self.n_frames, self.frame_s),
        )
        try:
            parts.frontend.start_session(session)
            self.trace.row("run_start", 0.0, detail=parts.frontend.name)
            env.process(self._user_words())
            if parts.oracle_replay is not None:
                env.process(oracle_replay_process(env, parts.oracle_replay, self._enqueue, self.end_time))
            else:
                env.process(self._stt())
                env.process(self._stream_manager())
            env.run(until=env.process(self._frame_loop()))
        finally:
            parts.frontend.end_session()
        if self.progress is not None:
            self.progress(self.n_frames, self.n_frames)
        self.trace.row("run_end", env.now, frame=self.n_frames, detail="ok")
