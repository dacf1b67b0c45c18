"""Progress reporting for long work, on a terminal and in log files alike.

One small API, :func:`progress`. On a terminal (the stream is a TTY) it draws a tqdm bar. When
the output goes to a file or a pipe, as in every batch job, it prints a timestamped line at most
every ``interval`` seconds, plus a first line when the work starts and a final line when it ends::

    2026-11-27T14:03:05Z recsys-ebm train rbm: epoch 3/40 loss 0.4123 valid ndcg@10 0.3012 eta 1m20s

Usage::

    bar = progress(total=cfg.epochs, desc="train rbm", unit="epoch")
    for epoch in range(cfg.epochs):
        ...
        bar.update(1, loss=loss, **{"valid ndcg@10": score})
    bar.close()

    for block in progress(blocks, desc="evaluate rbm", unit="block"):
        ...

Nested bars (an epoch bar and, inside it, a ``leave=False`` batch bar) share one throttle per
stream, so a log gets at most one line per interval in all; a batch bar is what reports inside a
long epoch, and it prints no final line.

The interval defaults to 30 seconds; the environment variable ``RECSYS_EBM_PROGRESS_INTERVAL``
(seconds, a number >= 0) changes it for every bar that does not pass ``interval``.
"""

from __future__ import annotations

import math
import os
import sys
import time
import weakref
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any, Generic, TypeVar

__all__ = ["DEFAULT_INTERVAL", "Progress", "format_duration", "progress"]

T = TypeVar("T")

DEFAULT_INTERVAL = 30.0  # seconds between lines in a log: frequent enough to show life, not spam
_ENV = "RECSYS_EBM_PROGRESS_INTERVAL"
# stream -> monotonic time of its last line (the shared throttle). Weak keys: a stream that is gone
# takes its entry with it, so a new stream never inherits an old one's time through a reused id()
_last_line: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_last_line_by_id: dict[int, float] = {}  # streams that take no weak reference


def _default_interval() -> float:
    raw = os.environ.get(_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{_ENV}: expected a number of seconds >= 0, got {raw!r}")
    return value


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1m15s"``; ``3725`` -> ``"1h02m"``; ``4.3`` -> ``"4s"``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def _is_tty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Progress(Generic[T]):
    """A progress reporter; build it with :func:`progress`.

    Iterate over it (when it wraps an iterable) or call :meth:`update`; call :meth:`close` at the
    end (or use it as a context manager; iterating to the end closes it).
    """

    def __init__(
        self,
        iterable: Iterable[T] | None,
        total: int | None,
        *,
        desc: str,
        unit: str,
        enabled: bool,
        interval: float | None,
        stream: IO[str] | None,
        leave: bool,
        initial: int = 0,
    ) -> None:
        if iterable is not None and total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.leave = leave
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        self.interval = _default_interval() if interval is None else float(interval)
        if not math.isfinite(self.interval) or self.interval < 0:
            raise ValueError(f"progress interval: expected seconds >= 0, got {interval!r}")
        self.n = self.initial = initial
        self.postfix: dict[str, Any] = {}
        self.closed = False
        self._t0 = time.monotonic()
        self._tqdm: Any = None
        self.enabled = enabled
        self.mode = "off" if not enabled else ("tty" if _is_tty(self.stream) else "log")
        if self.mode == "tty":
            from tqdm import tqdm

            self._tqdm = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=self.stream,
                leave=leave,
                dynamic_ncols=True,
            )
        elif self.mode == "log" and leave:
            what = f" ({total} {unit}s)" if total is not None else ""
            resumed = f", resumed at {unit} {initial}" if initial else ""
            self._emit(f"started{what}{resumed}", force=True)

    # -- reporting -------------------------------------------------------------------------
    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n`` and set the shown values (``loss=0.41``, ``**{"valid ndcg@10": x}``)."""
        self.n += n
        if postfix:
            self.postfix.update(postfix)
        if self.mode == "tty":
            if postfix:
                self._tqdm.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)
            self._tqdm.update(n)
        elif self.mode == "log":
            self._emit(self._status(), force=False)

    def set_postfix(self, **postfix: Any) -> None:
        """Set shown values without advancing."""
        self.update(0, **postfix)

    def write(self, message: str) -> None:
        """Print one message now, above the bar on a terminal, timestamped in a log."""
        if self.mode == "tty":
            self._tqdm.write(message, file=self.stream)
        elif self.mode == "log":
            self._emit(message, force=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.mode == "tty":
            self._tqdm.close()
        elif self.mode == "log" and self.leave:
            took = format_duration(time.monotonic() - self._t0)
            self._emit(f"{self._status(eta=False)} done in {took}".replace("  ", " "), force=True)

    # -- iteration / context -----------------------------------------------------------------
    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("progress: this reporter wraps no iterable; call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def eta(self) -> float | None:
        """Seconds left, from the mean rate so far (resumed steps excluded); None when unknown."""
        done = self.n - self.initial
        if self.total is None or done <= 0:
            return None
        elapsed = time.monotonic() - self._t0
        return elapsed / done * max(self.total - self.n, 0)

    def _status(self, *, eta: bool = True) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        parts = [f"{self.unit} {count}"]
        parts += [f"{k} {_fmt(v)}" for k, v in self.postfix.items()]
        if eta:
            left = self.eta()
            parts.append(f"eta {format_duration(left) if left is not None else '?'}")
        return " ".join(parts)

    def _emit(self, text: str, *, force: bool) -> None:
        now = time.monotonic()
        try:
            last, table, key = _last_line.get(self.stream, -math.inf), _last_line, self.stream
        except TypeError:  # no weak reference to this stream
            key = id(self.stream)
            last, table = _last_line_by_id.get(key, -math.inf), _last_line_by_id
        if not force and now - last < self.interval:
            return
        table[key] = now
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            self.stream.write(f"{stamp} recsys-ebm {self.desc}: {text}\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken log must not kill training
            self.mode = "off"


def progress(
    iterable_or_total: Iterable[T] | int | None = None,
    *,
    desc: str,
    unit: str = "it",
    total: int | None = None,
    enabled: bool = True,
    interval: float | None = None,
    stream: IO[str] | None = None,
    leave: bool = True,
    initial: int = 0,
) -> Progress[T]:
    """Report progress of long work: a tqdm bar on a terminal, timestamped lines in a log.

    Args:
        iterable_or_total: an iterable to wrap, or the total count (an int), or None.
        desc: what is being done, e.g. ``"train rbm"``; starts every line.
        unit: the counted unit, e.g. ``"epoch"``, ``"batch"``, ``"block"``.
        total: the total count, when wrapping an iterable without ``len``.
        enabled: False makes every call a no-op (the ``progress`` config fields).
        interval: seconds between log lines (default ``RECSYS_EBM_PROGRESS_INTERVAL`` or 30).
        stream: where to write (default ``sys.stderr``); a TTY gets a bar, anything else lines.
        leave: False for inner bars (per batch): no start or final line, bar removed when done.
        initial: units already done (a resumed run); the ETA counts only this run's pace.

    Returns:
        A :class:`Progress`; iterate it or call ``update(n, **values)``, then ``close()``.

    Raises:
        ValueError: ``interval`` or the environment variable is negative or not a number.
    """
    if isinstance(iterable_or_total, bool):
        raise TypeError(
            f"progress: expected an iterable or an int total, got {iterable_or_total!r}"
        )
    if isinstance(iterable_or_total, int):
        total, iterable = iterable_or_total, None
    else:
        iterable = iterable_or_total
    return Progress(
        iterable,
        total,
        desc=desc,
        unit=unit,
        enabled=enabled,
        interval=interval,
        stream=stream,
        leave=leave,
        initial=initial,
    )
