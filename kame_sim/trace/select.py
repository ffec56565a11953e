"""Row selection for ``kame-sim trace show``: by event kind and by simulated time."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from kame_sim.errors import InputError
from kame_sim.trace.schema import EVENTS


def select_rows(
    table: pa.Table, kinds: Sequence[str] = (), from_s: float | None = None, to_s: float | None = None
) -> pa.Table:
    """The rows whose ``event`` is one of ``kinds`` (all when empty) and ``from_s <= t_sim <= to_s``.

    An unknown kind, a bound that is not a finite number, or ``from_s > to_s`` is an InputError
    naming the option (``--event``, ``--from``, ``--to``); rows keep their order.
    """
    for kind in kinds:
        if kind not in EVENTS:
            close = difflib.get_close_matches(kind, list(EVENTS), n=1)
            hint = f"did you mean {close[0]}?" if close else f"one of: {', '.join(EVENTS)}"
            raise InputError("<cli>", "--event", f"unknown event kind {kind!r} ({hint})")
    for flag, bound in (("--from", from_s), ("--to", to_s)):
        if bound is not None and not math.isfinite(bound):
            raise InputError("<cli>", flag, f"must be a finite number of seconds, got {bound}")
    if from_s is not None and to_s is not None and from_s > to_s:
        raise InputError("<cli>", "--to", f"{to_s:g} s is before --from {from_s:g} s")
    mask = None
    if kinds:
        mask = pc.is_in(table["event"], value_set=pa.array(sorted(set(kinds)), pa.string()))
    for op, bound in ((pc.greater_equal, from_s), (pc.less_equal, to_s)):
        if bound is not None:
            cond = op(table["t_sim"], pa.scalar(float(bound)))
            mask = cond if mask is None else pc.and_(mask, cond)
    return table if mask is None else table.filter(pc.fill_null(mask, False))
