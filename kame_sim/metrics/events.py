"""Columnar access to a trace, one event type at a time, as numpy arrays.

Why a helper: every metric needs a few columns of a few event types. Filtering the Arrow table
once per (event, column) with ``pc.equal`` would repeat the same string comparison dozens of
times; instead the event column is dictionary-encoded once, each event's row positions are kept,
and each numeric column is converted to numpy once (nulls filled with a sentinel), so a 120 s
trace is taken apart in a few milliseconds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Integer columns are nullable; -1 never occurs as a frame, stream, utterance or oracle index.
MISSING_INT = -1


class TraceColumns:
    """Row positions per event and numpy views of the columns of one trace table."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table.combine_chunks()
        n = len(self.table)
        self.n_rows = n
        self._rows: dict[str, np.ndarray] = {}
        if n:
            encoded = pc.dictionary_encode(self.table.column("event").chunk(0))
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            order = np.argsort(codes, kind="stable")  # stable: rows stay in event order
            bounds = np.searchsorted(codes[order], np.arange(len(encoded.dictionary) + 1))
            for i, name in enumerate(encoded.dictionary.to_pylist()):
                self._rows[name] = order[bounds[i] : bounds[i + 1]]
        self._numeric: dict[str, np.ndarray] = {}

    def rows(self, event: str) -> np.ndarray:
        """Positions (ascending, i.e. in event order) of the rows of ``event``."""
        return self._rows.get(event, np.empty(0, dtype=np.int64))

    def count(self, event: str) -> int:
        """Number of rows of ``event``."""
        return len(self.rows(event))

    def _column(self, name: str) -> np.ndarray:
        cached = self._numeric.get(name)
        if cached is None:
            column = self.table.column(name)
            if pa.types.is_integer(column.type):
                column = pc.fill_null(column, MISSING_INT)
                cached = column.to_numpy().astype(np.int64, copy=False)
            else:
                cached = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)  # null -> NaN
            self._numeric[name] = cached
        return cached

    def num(self, event: str, column: str) -> np.ndarray:
        """``column`` for the rows of ``event`` (ints: null = -1; floats: null = NaN)."""
        return self._column(column)[self.rows(event)]

    def num_at(self, rows: np.ndarray, column: str) -> np.ndarray:
        """``column`` at arbitrary row positions."""
        return self._column(column)[rows]

    def strings_at(self, rows: np.ndarray, column: str = "text") -> list[str | None]:
        """A string column at row positions, as Python objects (only for small row sets)."""
        if len(rows) == 0:
            return []
        return self.table.column(column).take(pa.array(rows, type=pa.int64())).to_pylist()

    def valid_at(self, rows: np.ndarray, column: str) -> np.ndarray:
        """Boolean: is ``column`` non-null at these rows."""
        if len(rows) == 0:
            return np.zeros(0, dtype=bool)
        taken = self.table.column(column).take(pa.array(rows, type=pa.int64()))
        return pc.is_valid(taken).to_numpy(zero_copy_only=False)
