"""Output folders that kame-sim writes into, and the manifest of what it wrote there.

Why a manifest: output folders are chosen by the user (``--out``), so they can hold anything --
notes, a hand-made analysis, someone else's data. kame-sim must never delete or overwrite a file it
did not write. Every file kame-sim is about to write in a folder is first listed in that folder's
``kame-sim.manifest.json``; ``--overwrite`` (and re-running a report or a sweep) removes exactly
the listed files, and a file kame-sim would write whose name is already taken by a file *not* in
the manifest is refused with a one-line :class:`InputError` before anything is written.

A file is listed *before* it is created, so a crash mid-write leaves a file that a later run may
remove. Entries are relative paths inside the folder; a manifest that names a path outside it (or
is not a manifest at all) is refused rather than followed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from kame_sim.errors import InputError

MANIFEST = "kame-sim.manifest.json"
_FORMAT = "kame-sim output manifest"
_VERSION = 1


def _entry(root: Path, name: str) -> str:
    """A manifest entry: a normalised relative POSIX path that stays inside the folder."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or name != pure.as_posix() or name == MANIFEST:
        raise InputError(root / MANIFEST, "files", f"entry {name!r} is not a plain path inside the folder")
    return name


class OutputDir:
    """One output folder: the files kame-sim wrote there (its manifest) and the ones it adds now.

    Nothing is written by creating one; :meth:`check` only looks. :meth:`record` lists a file (and
    creates the folder on first use); :meth:`remove_previous` removes what earlier kame-sim runs
    wrote; :meth:`rollback` removes what this object recorded after a failure (so a failed command
    leaves nothing, not an empty folder); :meth:`commit` ends its undo list.
    """

    def __init__(self, root: Path, what: str = "output folder") -> None:
        self.root = Path(root)
        self.manifest = self.root / MANIFEST
        for folder in (self.root, *self.root.parents):  # the nearest existing one must be a folder
            if folder.exists() or folder.is_symlink():
                if not folder.is_dir():
                    where = "is a file" if folder == self.root else f"cannot be created: {folder} is a file"
                    raise InputError(self.root, what, f"{where}, not a folder; choose another --out")
                break
        self.written: list[str] = self._read()
        self._ours = bool(self.written)  # the folder already held kame-sim output
        self._touched: list[str] = []
        self._created_dirs: list[Path] = []

    def _read(self) -> list[str]:
        if not self.manifest.exists() and not self.manifest.is_symlink():
            return []
        if self.manifest.is_symlink() or not self.manifest.is_file():
            raise InputError(self.manifest, None, "is not a kame-sim manifest (not a plain file)")
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(self.manifest, None, f"is not a kame-sim manifest ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise InputError(self.manifest, "format", "is not a kame-sim manifest")
        if not isinstance(data.get("files"), list):
            raise InputError(self.manifest, "format", "is not a kame-sim manifest")
        files = data["files"]
        if not all(isinstance(f, str) for f in files):
            raise InputError(self.manifest, "files", "entries must be strings")
        return [_entry(self.root, f) for f in files]

    def _inside(self, path: Path) -> bool:
        """Whether ``path`` really lies in the folder (no symlinked folder leads elsewhere)."""
        if path.parent == self.root:
            return True  # a file directly in the folder: both sides would resolve alike
        return path.parent.resolve().is_relative_to(self.root.resolve())

    def owns(self, name: str) -> bool:
        """Whether ``name`` (relative to the folder) is a file kame-sim wrote here."""
        return name in self.written

    def check(self, names: Iterable[str]) -> list[str]:
        """Refuse names taken by files kame-sim did not write; return the names that already exist."""
        existing: list[str] = []
        for name in names:
            path = self.root / _entry(self.root, name)
            if not path.exists() and not path.is_symlink():
                continue
            if not self.owns(name) or path.is_symlink() or not path.is_file() or not self._inside(path):
                raise InputError(
                    path,
                    None,
                    f"exists and was not written by kame-sim (not in {MANIFEST}); "
                    "move it away or choose another output folder",
                )
            existing.append(name)
        return existing

    def _save(self) -> None:
        self._mkdir(self.root)
        data = {"format": _FORMAT, "version": _VERSION, "files": self.written}
        tmp = self.manifest.with_name(MANIFEST + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.manifest)

    def _mkdir(self, path: Path) -> None:
        missing: list[Path] = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        path.mkdir(parents=True, exist_ok=True)
        self._created_dirs.extend(reversed(missing))

    def record(self, name: str) -> Path:
        """List ``name`` in the manifest (before it is written) and return its path."""
        return self.record_all([name])[0]

    def record_all(self, names: Iterable[str]) -> list[Path]:
        """List several names at once (one manifest write, not one per name); their paths.

        Why: a run lists four files and a sweep run two more; each manifest write is a write and a
        rename, which cost more than the run's own small files. The manifest ends the same as
        after one :meth:`record` per name in this order, and every name is still listed before
        any of them is written. Every name is checked before any is listed.
        """
        entries: list[str] = []
        paths: list[Path] = []
        for raw in names:
            name = _entry(self.root, raw)
            path = self.root / name
            if not self._inside(path):
                raise InputError(path, None, "leads outside the output folder (a symlinked folder)")
            self.check([name])
            entries.append(name)
            paths.append(path)
        new = False
        for name in entries:
            if name not in self._touched:
                self._touched.append(name)
            if name not in self.written:
                self.written.append(name)
                new = True
        if new:
            self._save()
        for path in paths:
            self._mkdir(path.parent)
        return paths

    def _unlink(self, name: str) -> None:
        path = self.root / name
        if not self._inside(path):
            return  # a folder replaced by a symlink: what it leads to is not ours
        if path.is_file() and not path.is_symlink():
            path.unlink()
        # Remove folders this file leaves empty, up to (not including) the output folder.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def remove_previous(self, keep: Iterable[str] = ()) -> None:
        """Remove every file earlier kame-sim runs listed here (except ``keep``); nothing else."""
        kept = set(keep)
        for name in [n for n in self.written if n not in kept]:
            self._unlink(name)
            self.written.remove(name)
        if self.written:
            self._save()
        elif self.manifest.exists():
            self.manifest.unlink()

    def rollback(self) -> None:
        """After a failure: remove every file this object recorded (they are kame-sim's and may be
        half-written), the manifest if it lists nothing else, and the folders left empty that
        kame-sim made. Files kame-sim did not write, and their folders, are left alone."""
        for name in reversed(self._touched):
            self._unlink(name)
            self.written.remove(name)
        self._touched.clear()
        with contextlib.suppress(OSError):
            if self.written:
                self._save()
            elif self.manifest.exists():
                self.manifest.unlink()
        dirs = list(reversed(self._created_dirs))
        if self._ours and self.root not in dirs:
            dirs.append(self.root)  # an output folder of an earlier kame-sim run, now empty
        for d in dirs:
            with contextlib.suppress(OSError):
                d.rmdir()  # only succeeds when empty
        self._created_dirs.clear()

    def commit(self, remove_stale: bool = False) -> None:
        """The output is finished: forget the undo list. With ``remove_stale``, also remove what
        earlier runs listed here that this one did not write again (a report's old pictures)."""
        if remove_stale:
            self.remove_previous(keep=self._touched)
        self._touched.clear()
        self._created_dirs.clear()
