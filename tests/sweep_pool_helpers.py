"""Stand-ins for sweep workers, in a module of their own: a spawned worker imports the module of the
function it runs, and this one imports no torch (a test module that does would make each spawn
cost seconds)."""

from __future__ import annotations

import os

from kame_sim.sweep.runner import RunBatch, RunOutcome


def batch_or_die(unit):
    """A stand-in for execute_batch: a unit holding the run 'bad' kills its worker outright."""
    tasks = unit.tasks if isinstance(unit, RunBatch) else (unit,)
    if any(t.run_id == "bad" for t in tasks):
        os._exit(3)
    return [RunOutcome(t.run_id, "ok", None, t.conversation_id) for t in tasks]
