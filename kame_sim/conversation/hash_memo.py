"""A per-process memo of conversations' content hashes, keyed by the files' status.

Why: a sweep worker loads the same conversation for every run, and hashing its wav (sha256 over
a few MB) was about half of the load. The hash still covers the bytes: it is computed from them
the first time, and reused only while every file's status says it is the same file unchanged.

Why that is safe: the key of a file is its ``(device, inode, size, mtime_ns, ctime_ns)``, taken
from the open file before and after its bytes were read (they must agree, or nothing is
memoised). Writing to a file moves its ctime to the current time, and no system call sets ctime
back (``touch``/``utime`` can restore mtime, not ctime); replacing it (a rename, a copy) gives a
new inode or ctime. The one gap is the clock's granularity: a write within the same tick as the
status was read could leave both times unchanged (git's "racy" index entries). So a key is
memoised only when the file's mtime and ctime are at least :data:`SETTLED_NS` older than the
moment its bytes were read; any later write then gets a later ctime. What is not covered: a clock
set back by more than that, or bytes changed under the file system (a raw block device write).
"""

from __future__ import annotations

import os
import time

#: ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` of one file.
FileKey = tuple[int, int, int, int, int]
#: The key of a file that does not exist (oracle_raw is optional): distinct from every FileKey.
ABSENT: FileKey = (-1, -1, -1, -1, -1)
#: A file's times must be this much older than the read for its key to be trusted (2 s: far
#: coarser than any file system's timestamp granularity, including FAT's 2 s mtime).
SETTLED_NS = 2_000_000_000
#: Entries kept at most (a sweep has a handful of conversations; a memo, so clearing is harmless).
MAX_ENTRIES = 256

_memo: dict[tuple[FileKey | None, ...], str] = {}


def file_key(before: os.stat_result, after: os.stat_result, read_at_ns: int) -> FileKey | None:
    """A file's key from its status before and after reading it, or None when it must not be
    trusted: it changed while being read, or its times are too recent (see the module notes)."""
    key = (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns)
    again = (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns)
    if key != again or read_at_ns - max(before.st_mtime_ns, before.st_ctime_ns) < SETTLED_NS:
        return None
    return key


def now_ns() -> int:
    """The wall clock in ns, the clock file times are set from (``time.time_ns``)."""
    return time.time_ns()


def lookup(keys: tuple[FileKey | None, ...]) -> str | None:
    """The memoised hash of these files (an absent file is ``None`` in its place), if any."""
    if _untrusted(keys):
        return None
    return _memo.get(keys)


def remember(keys: tuple[FileKey | None, ...], digest: str) -> None:
    """Memoise ``digest`` for these files, unless a present file's key is untrusted."""
    if _untrusted(keys):
        return
    if len(_memo) >= MAX_ENTRIES:
        _memo.clear()
    _memo[keys] = digest


def clear() -> None:
    """Forget every memoised hash (tests; a long-lived process that wants to)."""
    _memo.clear()


def _untrusted(keys: tuple[FileKey | None, ...]) -> bool:
    """A None key is an untrusted file (an absent one is :data:`ABSENT`)."""
    return any(k is None for k in keys)
