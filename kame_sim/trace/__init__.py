"""Arrow traces: the versioned schema, the streaming writer, readers and summaries."""

from kame_sim.trace.ipc_file import IPC_FILENAME, write_ipc_batches, write_ipc_file
from kame_sim.trace.reader import TraceData, read_trace, trace_from_batches
from kame_sim.trace.schema import EVENTS, SCHEMA_VERSION, TRACE_FILENAME, WALL_COLUMNS, trace_schema
from kame_sim.trace.writer import TraceWriter

__all__ = [
    "EVENTS",
    "IPC_FILENAME",
    "SCHEMA_VERSION",
    "TRACE_FILENAME",
    "WALL_COLUMNS",
    "TraceData",
    "TraceWriter",
    "read_trace",
    "trace_from_batches",
    "trace_schema",
    "write_ipc_batches",
    "write_ipc_file",
]
