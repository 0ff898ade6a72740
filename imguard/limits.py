"""What one image file may cost: bytes read, memory decoded, seconds spent.

Catalogs and competitor folders hold files that others made. A 195 KB PNG can declare 9400×9400
16-bit pixels (2.3 GB to decode naively), a crafted stream can keep a decoder busy for minutes:
each file gets a budget, and a file over it is that file's error (`ImageError`), never the run's.

The time limit is a timer (SIGALRM) where one can be used: in the main thread of a process, which
is where a one-job run and every worker of a local process pool run their files. The decoders
return to Python every block of data they decode, and the timer interrupts them there. Elsewhere
(a thread, a Dask worker) the limit is checked between the steps of a file's work instead.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import ImageError
from .fetch import DEFAULT_MAX_BYTES

# Decoding an image takes the decoder's buffer plus the conversions needed before it can be
# shrunk: a 32 MP RGB photo (Pillow keeps 4 bytes a pixel: 128 MB) or a 6000×4000 transparent PNG
# (8 bytes a pixel while reduced: 192 MB) fit; the 9400×9400 16-bit PNG of issue 22 (6 bytes a
# pixel: 530 MB) does not.
DEFAULT_DECODE_BYTES = 256 * 2**20
# A marketplace photo decodes in milliseconds; the slowest legitimate files measured, a 64 MP RGB
# PNG and an 88 MP 16-bit one, in 1.5 and 2.5 s. A file that takes ten times that is a crafted one.
DEFAULT_SECONDS = 20.0


@dataclass(frozen=True)
class Limits:
    """The budget of one image file; `Catalog.add` and `Catalog.scan` take one (`limits=`)."""

    file_bytes: int = DEFAULT_MAX_BYTES  # read (or downloaded) at most; a bigger file is refused
    decode_bytes: int = DEFAULT_DECODE_BYTES  # memory its decoding may take (see `load.decode`)
    seconds: float = DEFAULT_SECONDS  # to decode, fingerprint and match it

    def __post_init__(self) -> None:
        if self.file_bytes <= 0 or self.decode_bytes <= 0 or not self.seconds > 0:
            raise ValueError("Limits: file_bytes, decode_bytes and seconds must be positive")


class _Expired(BaseException):
    """Raised by the timer inside the work it interrupts. A BaseException, so that the `except
    Exception` of a decoder's fallback or of a batch's retry does not swallow it."""


_local = threading.local()  # this thread's deadline (time.monotonic()), for `check`


def check(name: str) -> None:
    """Raise ImageError when the current file is past its time limit: the check between steps,
    for threads where no timer can interrupt the work."""
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and time.monotonic() > deadline[0]:
        raise _expired(name, deadline[1])


def _expired(name: str, seconds: float) -> ImageError:
    return ImageError(name, f"took longer than {seconds:g} s (the time limit per image)")


def _can_use_timer() -> bool:
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0)  # nobody else's timer is running


def _expire(signum: int, frame: object) -> None:
    raise _Expired


@contextlib.contextmanager
def time_limit(name: str, seconds: float) -> Iterator[None]:
    """Run the body within `seconds`, or raise ImageError(name, ...) saying the time limit was hit.
    Inside another `time_limit` the body runs under the outer one."""
    if getattr(_local, "deadline", None) is not None:
        yield
        return
    deadline = time.monotonic() + seconds
    _local.deadline = (deadline, seconds)
    timer = _can_use_timer()
    previous = signal.signal(signal.SIGALRM, _expire) if timer else None
    try:
        try:
            if timer:
                signal.setitimer(signal.ITIMER_REAL, seconds)
            yield
        finally:
            _disarm(timer, previous)
    except _Expired:  # raised in the body, or just after it, before the timer was stopped
        _disarm(timer, previous)
        raise _expired(name, seconds) from None
    if time.monotonic() > deadline:  # the body ran to its end past the deadline (no timer here)
        raise _expired(name, seconds)


def _disarm(timer: bool, previous: object) -> None:
    """Stop the timer and put back the handler it replaced; safe to call twice."""
    if timer:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
    _local.deadline = None
