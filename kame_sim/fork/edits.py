"""What a branch changes, from ``--set KEY=VALUE`` assignments, each checked and sorted by kind.

Three kinds, each taking effect at the fork time T (docs/fork.md):

* a **delay model** (``llm.ttft``, ``llm.inter_chunk``, ``stt.partial_delay``, ``stt.final_delay``
  or a key inside one, ``llm.ttft.median``): the branch's scenario gets the new model; the pinned
  prefix keeps every delay caused before T, so only draws caused from T on see it;
* a **policy setting** (``policy.poll_interval``, ...: :data:`SWITCHABLE_POLICY_KEYS`): becomes the
  scenario's ``[switch]`` at T;
* a **schedule edit** of one event caused at or after T: ``stream.N.ttft``, ``stream.N.fault``,
  ``stream.N.gap.K``, ``stt.partial.U.W``, ``stt.final.U`` (seconds).

Anything else cannot change mid-run (the conversation, the front-end, the seed, the policy's kind,
the LLM's content...) and is refused with one line saying why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kame_sim.config import SWITCHABLE_POLICY_KEYS, parse_override
from kame_sim.delays.samplers import MAX_DELAY
from kame_sim.errors import InputError
from kame_sim.schedule import DelaySchedule, Fault

DELAY_MODEL_KEYS = ("llm.ttft", "llm.inter_chunk", "stt.partial_delay", "stt.final_delay")
_WHY_NOT = {
    "run": "the branch replays the original's run settings and seed",
    "conversation": "the branch replays the original's conversation",
    "frontend": "the front-end is the same on both sides of the fork",
    "oracle": "the oracle's tokenizer and padding are fixed for the session",
    "replay": "a fork replays simulated STT and LLM, not a recorded oracle",
    "delays": "the fork writes the branch's schedule itself (edit events with stream.N.* / stt.*)",
    "switch": "the fork writes [switch] itself (set policy.KEY)",
    "llm": "only the delay models (llm.ttft, llm.inter_chunk) can change mid-run: the rest shapes "
    "the streams started before the fork too",
    "stt": "only the delay models (stt.partial_delay, stt.final_delay) can change mid-run",
}


@dataclass
class BranchChanges:
    """One branch's changes: scenario overrides (delay models), policy switch, schedule edits."""

    models: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    edits: DelaySchedule = field(default_factory=DelaySchedule)
    assignments: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.models or self.policy or len(self.edits))


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError("<cli>", f"--set {key}", f"must be a number of seconds, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= MAX_DELAY:
        raise InputError("<cli>", f"--set {key}", f"must be >= 0 and <= {MAX_DELAY:g} seconds, got {value!r}")
    return value


def _index(key: str, part: str, low: int) -> int:
    if not part.isascii() or not part.isdigit() or int(part) < low:
        raise InputError("<cli>", f"--set {key}", f"{part!r} is not a number >= {low}")
    return int(part)


def _edit(changes: BranchChanges, key: str, value: Any) -> None:
    parts = key.split(".")
    edits = changes.edits
    if parts[0] == "stream":
        shapes = "stream.N.ttft, stream.N.fault or stream.N.gap.K"
        if len(parts) not in (3, 4):
            raise InputError("<cli>", f"--set {key}", f"expected {shapes}")
        sid = _index(key, parts[1], 1)
        what = parts[2]
        if what == "ttft" and len(parts) == 3:
            edits.ttft[sid] = _seconds(key, value)
        elif what == "fault" and len(parts) == 3:
            edits.fault[sid] = Fault(_seconds(key, value), "error: fork fault")
        elif what == "gap" and len(parts) == 4:
            edits.chunk_gap[(sid, _index(key, parts[3], 1))] = _seconds(key, value)
        else:
            raise InputError("<cli>", f"--set {key}", f"expected {shapes}")
        return
    # stt.partial.U.W / stt.final.U
    if parts[1] == "partial" and len(parts) == 4:
        edits.stt_partial[(_index(key, parts[2], 0), _index(key, parts[3], 0))] = _seconds(key, value)
    elif parts[1] == "final" and len(parts) == 3:
        edits.stt_final[_index(key, parts[2], 0)] = _seconds(key, value)
    else:
        raise InputError("<cli>", f"--set {key}", "expected stt.partial.U.W or stt.final.U")


def parse_changes(assignments: list[str], policy_kind: str) -> BranchChanges:
    """Sort ``KEY=VALUE`` assignments into a branch's changes; one InputError line per problem.

    ``policy_kind``: the original's policy (its switchable keys differ). Values are only checked
    here for their kind; the branch's scenario validates them in full (ranges, model parameters).
    """
    changes = BranchChanges(assignments=list(assignments))
    seen: set[str] = set()
    for assignment in assignments:
        key, value = parse_override(assignment)
        if key in seen:
            raise InputError("<cli>", f"--set {key}", "given twice")
        seen.add(key)
        parts = key.split(".")
        section = parts[0]
        if section == "stream" or (section == "stt" and len(parts) > 1 and parts[1] in ("partial", "final")):
            _edit(changes, key, value)
        elif any(key == m or key.startswith(m + ".") for m in DELAY_MODEL_KEYS):
            changes.models[key] = value
        elif section == "policy":
            allowed = SWITCHABLE_POLICY_KEYS[policy_kind]
            if len(parts) != 2 or parts[1] not in allowed:
                why = (
                    "the policy's kind" if parts[1:] == ["kind"] else f"policy.{'.'.join(parts[1:])}"
                ) + " cannot change mid-run"
                raise InputError(
                    "<cli>", f"--set {key}", f"{why}; can under {policy_kind}: {', '.join(allowed)}"
                )
            changes.policy[parts[1]] = value
        elif section in _WHY_NOT:
            raise InputError("<cli>", f"--set {key}", f"cannot change at the fork: {_WHY_NOT[section]}")
        else:
            known = "stream.N.*, stt.partial.U.W, stt.final.U, policy.*, " + ", ".join(DELAY_MODEL_KEYS)
            raise InputError("<cli>", f"--set {key}", f"unknown key; known: {known}")
    return changes
