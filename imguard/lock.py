"""One writer at a time per catalog: the lock `index`, `rebuild`, `nightly` and `mark` take.

SQLite already serialises single transactions; this lock serialises whole runs, so that two cron
jobs never interleave an index with a nightly comparison. It is an advisory lock on
``<catalog>/lock``: a POSIX record lock (``fcntl.lockf``; ``msvcrt.locking`` on Windows), owned by
the process that took it and released by the system when that process dies, however it dies: a
SIGKILL leaves no stale lock. (Not ``flock``: a flock is shared with the worker processes a run
forks, which would keep it while they live on.) The file also says who holds it
(pid, command, since), for the message a second writer gets. Readers (`scan`, `stats`, `findings`)
never take it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import IO, Any

from .errors import ImguardError

LOCK_NAME = "lock"
POLL_SECONDS = 0.2  # how often a waiting writer tries again


class LockHeld(ImguardError):
    """Another imguard run writes to this catalog; `holder` says which, as far as it is known."""

    def __init__(self, folder: str, holder: dict[str, Any], waited: float) -> None:
        who = f"pid {holder.get('pid', '?')}" + (f", `{holder['command']}`" if holder.get("command") else "")
        since = f", since {holder['since']}" if holder.get("since") else ""
        waited_text = f" (waited {waited:g} s)" if waited else ""
        super().__init__(f"{folder}: another imguard run is writing to this catalog ({who}{since}){waited_text}")
        self.folder = folder
        self.holder = holder


# The locks this process holds: lock file → [handle, depth]. One entry per file, whatever number
# of Catalog objects use it: a POSIX lock is the process's, and closing any handle of the file
# would release it for all of them. A forked child holds none of them.
_HELD: dict[str, list[Any]] = {}
_HELD_GUARD = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_HELD.clear)


class CatalogLock:
    """The writer lock of one catalog folder. Re-entrant within a process: a nightly run that
    indexes the catalog takes it once."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._key = os.path.realpath(self.path)

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to `wait` seconds for another holder to finish; LockHeld
        (naming the holder) when it does not."""
        with _HELD_GUARD:
            held = _HELD.get(self._key)
            if held is not None:
                held[1] += 1
                return
            os.makedirs(self.folder, exist_ok=True)
            handle = open(self.path, "a+", encoding="utf-8")
            start = time.monotonic()
            while not _try_lock(handle):
                if time.monotonic() - start >= wait:
                    holder = _read_holder(handle)
                    handle.close()
                    raise LockHeld(self.folder, holder, round(wait, 1))
                time.sleep(POLL_SECONDS)
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv),
                                     "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
            handle.flush()
            _HELD[self._key] = [handle, 1]

    def release(self) -> None:
        with _HELD_GUARD:
            held = _HELD.get(self._key)
            if held is None:
                return
            held[1] -= 1
            if held[1] == 0:
                handle = held[0]
                handle.seek(0)
                handle.truncate()  # nobody holds it: nobody to name
                handle.flush()
                _unlock(handle)
                handle.close()
                del _HELD[self._key]

    def __enter__(self) -> CatalogLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(handle: IO[str]) -> dict[str, Any]:
    try:
        handle.seek(0)
        holder = json.loads(handle.read() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


if os.name == "nt":  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(handle: IO[str]) -> bool:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(handle: IO[str]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(handle: IO[str]) -> bool:
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            return True
        except OSError:  # EACCES or EAGAIN: another process holds it
            return False

    def _unlock(handle: IO[str]) -> None:
        fcntl.lockf(handle.fileno(), fcntl.LOCK_UN, 1, 0)
