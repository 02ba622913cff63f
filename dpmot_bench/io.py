"""Atomic writes: a file appears complete or not at all (temp file in the same directory + rename).

A temp file is named ``.{name}.{pid}.{random}.tmp`` (``TEMP_NAME``): the target's name and the id of the
process writing it. A process killed mid-write (SIGKILL, power loss) cannot delete its temp file, so runs
call :func:`remove_stale_temps` when they start: it removes the temp files whose writer is gone and keeps
those of live writers (a concurrent run in the same folder stays safe).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError


def can_create_in(folder: str | os.PathLike) -> bool:
    """Whether a file can be created in the existing directory ``folder``: tried with an unnamed temp file,
    not guessed from mode bits (``os.access`` says yes to root everywhere, also in ``/proc`` or ``/sys``)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=f".probe.{os.getpid()}.", suffix=".tmp"):
            return True
    except OSError:
        return False


def ensure_writable_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` (and parents) if needed and check that files can be written there."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create output directory {str(directory)!r}: {err.strerror}") from None
    if not can_create_in(directory):
        raise InputError(f"output directory {str(directory)!r} is not writable; choose another with --out")
    return directory


# ``.{name}.{pid}.{random}.tmp`` (pid of the writer; ``random``: tempfile's 8 characters), or the pid-less
# ``.{name}.{random}.tmp`` of older versions. A name that fits both forms is read as the pid form (the
# cautious reading: a live pid keeps the file).
TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>[0-9]+)\.)?(?P<random>[a-z0-9_]{8})\.tmp$")


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it.

    The temp file is ``.{path.name}.{pid}.{random}.tmp`` (see ``TEMP_NAME``), so that
    :func:`remove_stale_temps` can tell a killed writer's leftover from a live writer's file."""
    path = Path(path)
    ensure_writable_dir(path.parent if str(path.parent) else ".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the user's umask
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _writer_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (signal 0 probes without signalling)."""
    if pid <= 0:  # not a process id (0 and negatives would address process groups)
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: never judge, keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OverflowError:  # too large to be a process id
        return False
    return True


def _stale_temp_name(name: str, targets: set[str] | None) -> bool:
    """Whether the file name ``name`` is a temp file (of a target in ``targets``, if given) whose writer is
    gone. A name is tried in the pid form first; when the writer is alive it is kept."""
    if not name.startswith(".") or not name.endswith(".tmp"):
        return False
    if targets is None:
        match = TEMP_NAME.match(name)
        if match is None:
            return False
        return match["pid"] is None or not _writer_alive(int(match["pid"]))
    for target in targets:
        prefix = f".{target}."
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):-len(".tmp")]  # "{pid}.{random}" or "{random}"
        pid, dot, random = rest.rpartition(".")
        if not re.fullmatch(r"[a-z0-9_]{8}", random):
            continue
        if not dot:
            return True  # pid-less temp of an older version: stale
        if pid.isdigit() and pid.isascii():
            if not _writer_alive(int(pid)):
                return True
    return False


def remove_stale_temps(directory: str | os.PathLike, *, names=None, recursive: bool = True) -> list[Path]:
    """Delete the temp files that killed writers left in ``directory``; returns the deleted paths.

    A temp file is one named by :func:`atomic_path`: ``.{name}.{pid}.{random}.tmp``. It is deleted when
    process ``pid`` no longer exists on this machine (``os.kill(pid, 0)`` raises ``ProcessLookupError``);
    it is kept while ``pid`` lives (a concurrent writer, even another user's: ``PermissionError``), so
    calling this at the start of a run never breaks a concurrent run's atomic write. Pid-less temp files
    ``.{name}.{random}.tmp`` (written by versions before pids were recorded) are always deleted as stale
    (so a live writer of such an older version is not protected).

    ``names``: only the temp files of these target file names (e.g. ``["x.npz"]`` deletes
    ``.x.npz.*.tmp`` and nothing else), for folders that belong to the user (the folder of
    ``--out x.npz``). ``recursive``: also every subfolder (symlinks are not followed). Nothing that
    is not a temp file of this form is touched; a missing ``directory`` deletes nothing, and a folder
    that cannot be read or a file that cannot be deleted is skipped (not an error).

    Limits: process ids are those of this machine (and pid namespace): a live writer on another host
    sharing the folder looks dead. A dead writer whose pid was since reused looks alive, so its temp
    file stays until a later run finds the pid free.
    """
    directory = Path(directory)
    targets = None if names is None else {Path(n).name for n in ([names] if isinstance(names, str) else names)}
    removed: list[Path] = []
    pending = [directory]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # gone, or not ours to read
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        pending.append(Path(entry.path))
                    continue
                is_file = entry.is_file(follow_symlinks=False)
            except OSError:
                continue
            if is_file and _stale_temp_name(entry.name, targets):
                path = Path(entry.path)
                try:
                    path.unlink(missing_ok=True)
                except OSError:  # not ours to delete (another user's folder): leave it, run on
                    continue
                removed.append(path)
    return sorted(removed)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_npz(path: str | os.PathLike, **arrays) -> None:
    """``np.savez`` through a temp file, so a reader never sees half an archive."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def load_tensors(path: str | os.PathLike, what: str, fix: str):
    """``torch.load(path, weights_only=True)`` onto the CPU: tensors and plain containers only, never code.
    Anything else (a pickle of objects, garbage, a directory) is a one-line CorruptFileError naming ``what``
    and ``fix``; torch's own warning about what it refused is silenced (the error says it)."""
    import warnings

    import torch

    from .errors import CorruptFileError

    path = Path(path)
    if path.is_dir():
        raise CorruptFileError(f"{what} {str(path)!r} is a directory, not a file; {fix}")
    if not path.is_file():
        raise CorruptFileError(f"{what} {str(path)!r} does not exist; {fix}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        raise CorruptFileError(f"{what} {str(path)!r} is not a readable tensor file ({type(err).__name__}: only "
                               f"tensors are loaded, never pickled objects); {fix}") from None


_HELD_LOCKS: dict[str, int] = {}  # lock files this process holds, with their nesting depth


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, *, wait: bool) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if needed; it records the holder's pid) for
    the ``with`` block: across processes on this machine (``fcntl.flock``), re-entrant within one.

    ``wait=False``: if another process holds it, an InputError says that ``what`` is in use and by which
    pid (a second run into one report folder). ``wait=True``: block until it is free (a second process
    that needs the same cached model waits for the first to finish training it). A killed holder's lock
    is released by the operating system, so it never goes stale."""
    import fcntl

    path = Path(path)
    key = str(path.absolute())
    if _HELD_LOCKS.get(key):
        _HELD_LOCKS[key] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key] -= 1
        return
    ensure_writable_dir(path.parent)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise InputError(f"{what} is in use by another dpmot run (pid {holder}); wait for it to finish or "
                             "choose another place") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD_LOCKS[key] = 1
        try:
            yield
        finally:
            del _HELD_LOCKS[key]
    finally:
        handle.close()  # closing releases the lock

