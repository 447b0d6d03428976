"""Every file the daemon writes goes through here: atomically, and private.

Why one module:
- A crash (or kill -9, or a full disk) while a file is rewritten must leave the
  old file or the new one, never a torn mix. The recipe is always the same:
  a uniquely named temporary file in the *same* directory (so the rename
  cannot cross file systems), write, fsync, rename over the target, fsync the
  directory (so the rename itself survives a power cut). Unique names matter:
  two writers of the same file (idle training, a backup and shutdown all save
  the router) must never share or delete each other's temporary file.
- The user's notes are private (door codes, wifi passwords). Files are created
  0600 (0640 when a group is meant to read them), directories 0700 (0750),
  whatever the umask of the shell that started us, the way ssh and gpg do it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger(__name__)

FILE_MODE = 0o600
GROUP_FILE_MODE = 0o640
DIR_MODE = 0o700
GROUP_DIR_MODE = 0o750
TMP_PREFIX = ".tmp-"


def file_mode(group_readable: bool = False) -> int:
    return GROUP_FILE_MODE if group_readable else FILE_MODE


def dir_mode(group_readable: bool = False) -> int:
    return GROUP_DIR_MODE if group_readable else DIR_MODE


def fsync_path(path: Path, directory: bool = False) -> None:
    """Flush a file's data (or, with ``directory``, the renames and creates inside it)."""
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    fsync_path(path, directory=True)


@contextlib.contextmanager
def atomic_writer(path: Path | str, mode: int = FILE_MODE) -> Iterator[IO[bytes]]:
    """Write ``path`` through a binary file object; it appears whole or not at all.

    On any exception inside the block the temporary file is removed and the
    old ``path`` (if any) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)                      # mkstemp gives 0600; widen only if asked
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path | str, data: bytes | str, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see module doc)."""
    with atomic_writer(path, mode) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def remove_stale_tmp(directory: Path, name: str, older_than_s: float = 3600.0) -> int:
    """Delete leftovers of crashed writers of ``name`` (never a live writer's file).

    Only temporary files untouched for ``older_than_s`` are removed, so a
    concurrent writer that is still writing keeps its file.
    """
    import time

    n = 0
    now = time.time()
    for p in Path(directory).glob(f"{TMP_PREFIX}{name}.*"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                p.unlink()
                n += 1
        except OSError:
            continue
    return n


def make_private_dir(path: Path | str, group_readable: bool = False) -> list[str]:
    """Create ``path`` (and parents) and make sure others cannot read it.

    Returns a list of what was tightened (for a warning in the log). An
    existing directory that is wider than wanted is narrowed; one that is
    narrower is left alone.
    """
    path = Path(path)
    want = dir_mode(group_readable)
    path.mkdir(mode=want, parents=True, exist_ok=True)   # the leaf: want & ~umask, never wider
    return tighten(path, want)


def private_file(path: Path | str, mode: int = FILE_MODE) -> list[str]:
    """Create ``path`` empty with ``mode`` unless it exists; narrow it if it is wider.

    For files another library creates and writes (SQLite): created by us first,
    they never exist with the umask's mode, and SQLite gives its -wal and -shm
    files the mode of the database file. Returns what was tightened.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return tighten(path, mode)
    try:
        os.fchmod(fd, mode)   # O_CREAT's mode is masked by the umask; this is not
    finally:
        os.close(fd)
    return []


def tighten(path: Path | str, want: int) -> list[str]:
    """Remove permission bits beyond ``want``; returns [description] when changed."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return []
    have = stat.S_IMODE(st.st_mode)
    extra = have & ~want
    if not extra:
        return []
    try:
        os.chmod(path, have & want)
    except PermissionError:   # not ours (another user's file): say so, do not stop a start-up
        return [f"{path}: {oct(have)}, could not narrow it (owner uid {st.st_uid})"]
    return [f"{path}: {oct(have)} -> {oct(have & want)}"]


def tighten_tree(root: Path | str, group_readable: bool = False,
                 names: tuple[str, ...] | None = None, depth: int = 2) -> list[str]:
    """Tighten ``root`` and what is in it (only ``names`` at the top, if given).

    Used at start-up on the data directory, so a data dir created by an older
    version (or copied with a loose umask) stops being readable by others.
    Sub-directories (``backups/``) are followed ``depth`` levels down; symlinks
    and sockets are left alone (the ipc socket has its own ``socket_mode``).
    """
    root = Path(root)
    changed = tighten(root, dir_mode(group_readable))
    try:
        entries = list(root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return changed
    for p in entries:
        if names is not None and p.name not in names:
            continue
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            changed += tighten(p, file_mode(group_readable))
        elif stat.S_ISDIR(st.st_mode):
            if depth > 0:
                changed += tighten_tree(p, group_readable, depth=depth - 1)
            else:
                changed += tighten(p, dir_mode(group_readable))
    return changed
