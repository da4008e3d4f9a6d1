"""One run per output folder: a lock file holding the owner's pid, host and start time.

:func:`output_lock` creates ``FOLDER/.testbed.lock`` exclusively (``O_CREAT | O_EXCL``). A second run into the
same folder finds it and stops with :class:`~testbed.errors.OutputLockedError`, unless the lock is *stale*: its
owner was on this host and is no longer running (a killed run), in which case the lock is taken over. The lock
is removed when the block ends, whatever happens inside it.

:func:`prepare_output_dir` turns every way an output path can be unusable (a file, under a file, read-only, a
name too long) into one :class:`~testbed.config.ConfigError` naming the path, before any work starts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from testbed.config import ConfigError
from testbed.errors import OutputLockedError

LOCK_NAME = ".testbed.lock"


def describe_os_error(err: OSError, path: str | Path | None = None) -> str:
    """One line for an :class:`OSError`: the path and what is wrong with it."""
    where = path if path is not None else (err.filename if err.filename is not None else "?")
    reasons = {
        errno.EEXIST: "exists and is not a folder",
        errno.ENOTDIR: "a part of this path is a file, not a folder",
        errno.EISDIR: "is a folder, not a file",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "the file system is read-only",
        errno.ENAMETOOLONG: "a name in this path is too long",
        errno.ENOSPC: "no space left on the device",
        errno.ENOENT: "no such file or folder",
    }
    reason = reasons.get(err.errno or -1, err.strerror or type(err).__name__)
    return f"{where}: {reason}"


def prepare_output_dir(out: str | Path, flag: str = "--out") -> Path:
    """Create ``out`` (and parents) or raise :class:`ConfigError` naming it and the reason."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{flag} {describe_os_error(err, out)}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {out}: folder is not writable")
    return out


def _holder(path: Path) -> tuple[int | None, str, str]:
    try:
        parts = path.read_text().split(maxsplit=2)
        return int(parts[0]), parts[1] if len(parts) > 1 else "", parts[2].strip() if len(parts) > 2 else ""
    except (OSError, ValueError, IndexError):
        return None, "", ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) holds nothing
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def output_lock(folder: str | Path, flag: str = "--out") -> Iterator[Path]:
    """Hold ``folder``'s lock for the duration of the block (see the module docstring)."""
    folder = prepare_output_dir(folder, flag)
    path = folder / LOCK_NAME
    host = socket.gethostname()
    stamp = f"{os.getpid()} {host} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, owner_host, since = _holder(path)
            try:
                just_made = pid is None and time.time() - path.stat().st_mtime < 5.0  # being written right now
            except OSError:
                just_made = False
            if just_made or (pid is not None and (owner_host != host or _alive(pid))):
                raise OutputLockedError(
                    f"{folder} is in use by another testbed run (pid {pid} on {owner_host or '?'}, since "
                    f"{since or '?'}); wait for it or choose another {flag} (if no such run exists, delete "
                    f"{path})") from None
            with contextlib.suppress(FileNotFoundError):  # stale: its owner is gone
                path.unlink()
            continue
        except OSError as err:
            raise ConfigError(f"{flag} {describe_os_error(err, folder)}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(stamp)
        break
    else:
        raise OutputLockedError(f"could not take the lock {path}: another run keeps taking it")
    try:
        yield folder
    finally:
        if _holder(path)[0] == os.getpid():
            with contextlib.suppress(OSError):
                path.unlink()
