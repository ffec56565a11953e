"""Arrow traces: the versioned schema, the streaming writer, readers and summaries."""

from kame_sim.trace.reader import TraceData, read_trace
from kame_sim.trace.schema import EVENTS, SCHEMA_VERSION, TRACE_FILENAME, WALL_COLUMNS, trace_schema
from kame_sim.trace.writer import TraceWriter

__all__ = [
    "EVENTS",
    "SCHEMA_VERSION",
    "TRACE_FILENAME",
    "WALL_COLUMNS",
    "TraceData",
    "TraceWriter",
    "read_trace",
    "trace_schema",
]
