"""Which sweep runs may share a lockstep batch (:mod:`kame_sim.lockstep`): a pure function of plans.

A lockstep batch steps ONE front-end (one checkpoint, one set of sampling settings) for all its
replicas, frame by frame, so the replicas must agree on everything that decides the front-end and
the frames: the front-end settings, the conversation (its settings: path, id, speakers, sample
rate, frame size; and its content, via the run's conversation id) and ``run.max_seconds``.
Everything else may differ per replica: seed, STT / LLM / delay / policy / oracle settings, replay,
schedule (``lockstep._check_batchable`` asks no more).

Which runs are batched at all, and why:

* only runs of the real front-end (``frontend.kind = "kame"``): batching shares its LM step. A
  behavioural batch shares nothing (it loops B independent front-ends): measured on the demo, 8
  replicas took 0.44-0.94 s batched vs 0.30-0.53 s one by one, and a batch would take runs
  away from parallel workers. So behavioural runs stay solo; their results are the same either way.
* only ``run.time_coupling = "virtual"``: in ``budget`` a batched replica is charged the whole
  batch's step (another experiment than the solo run the sweep asked for); ``wall`` paces one
  environment and cannot be batched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def batch_key(scenario: Mapping[str, Any], conversation_id: str) -> str | None:
    """What runs of one batch must share, as canonical JSON; None: this run always runs alone.

    ``scenario`` is a resolved scenario in its JSON form (``PlannedRun.scenario``);
    ``conversation_id`` the planned conversation's id (its content is in the run id already, and
    one sweep reads one path + id as one content).
    """
    frontend = scenario.get("frontend") or {}
    run = scenario.get("run") or {}
    if frontend.get("kind") != "kame" or run.get("time_coupling", "virtual") != "virtual":
        return None
    shared = {
        "conversation": scenario.get("conversation"),
        "conversation_id": conversation_id,
        "frontend": frontend,
        "max_seconds": run.get("max_seconds"),
    }
    return json.dumps(shared, sort_keys=True, separators=(",", ":"))


def plan_batches(keys: Sequence[str | None], batch_size: int) -> list[list[int]]:
    """Indexes of ``keys`` grouped into batches of at most ``batch_size`` equal, non-None keys.

    Runs keep their order: batches are ordered by their first run, and a batch holds its runs in
    plan order, so the same plan always gives the same batches. A None key is a batch of one.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batches: list[list[int]] = []
    open_batch: dict[str, list[int]] = {}  # key -> its batch still filling
    for index, key in enumerate(keys):
        if key is None or batch_size == 1:
            batches.append([index])
            continue
        current = open_batch.get(key)
        if current is None or len(current) >= batch_size:
            current = []
            open_batch[key] = current
            batches.append(current)
        current.append(index)
    return batches
