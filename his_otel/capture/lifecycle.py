"""Living inside someone else's process: exit, fork, pool workers and SIGTERM.

- Exit: ``atexit`` writes what is pending, within the shutdown timeout.
- ``fork``: the child rebuilds everything (queue, counters, locks, writer thread, DynamoDB client);
  the parent is untouched.
- ``multiprocessing`` workers leave through ``os._exit`` and never run ``atexit``: a
  ``multiprocessing.util.Finalize`` registered in each child writes their rows instead.
- SIGTERM belongs to the application. his-otel takes it only where nobody handles it (``SIG_DFL``):
  it then writes what is pending, from a thread of its own (the main thread runs on meanwhile: it may
  hold a lock the writing needs), and lets the process die of the signal. It never shuts itself
  down on a signal, so an application's own handler (uvicorn's, gunicorn's) can drain in-flight
  work while milestones keep being written; their rows are made durable at the end of each
  invocation (``HISHooks``) and at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from .. import notice

logger = logging.getLogger(__name__)


class Forkable(Protocol):
    def shutdown(self) -> None: ...

    def after_fork_in_child(self) -> None: ...


def watch(obj: Forkable) -> None:
    """Shut ``obj`` down at exit, rebuild it in forked children, flush it in pool workers."""
    ref = weakref.ref(obj)

    def at_exit() -> None:
        target = ref()
        if target is not None:
            target.shutdown()

    def in_child() -> None:
        target = ref()
        if target is not None:
            target.after_fork_in_child()

    atexit.register(at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=in_child)
    try:
        import multiprocessing.util as mp_util
    except ImportError:  # pragma: no cover - an interpreter without multiprocessing
        return

    def in_mp_child(target: Forkable) -> None:
        # Runs in multiprocessing's child after its finalizer registry was cleared; the finalizer
        # runs before the child's os._exit, and holds the pipeline only weakly.
        mp_util.Finalize(None, at_exit, exitpriority=100)

    mp_util.register_after_fork(obj, in_mp_child)


# -- SIGTERM -----------------------------------------------------------------------------------

_sigterm_lock = threading.Lock()
# Every pipeline's flush (the app's, a library's, a tenant's): one handler runs them all.
_sigterm_flushes: list[Callable[[], object]] = []
_warned_off_main = False


def want_sigterm_flush(flush: Callable[[], object]) -> None:
    """Ask for ``flush`` to run when SIGTERM would kill the process (see :func:`ensure_sigterm_flush`),
    beside every other pipeline's."""
    with _sigterm_lock:
        _sigterm_flushes.append(flush)
    ensure_sigterm_flush()


def _flush_all() -> None:
    """Every pipeline's flush at once (each is bounded by its own shutdown timeout), so the process
    waits for the slowest, not for their sum."""
    with _sigterm_lock:
        flushes = list(_sigterm_flushes)

    def run(flush: Callable[[], object]) -> None:
        try:
            flush()
        except Exception:
            logger.exception("his-otel flush on SIGTERM failed")

    workers = [threading.Thread(target=run, args=(f,), name="his-otel-sigterm", daemon=True) for f in flushes]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


class _SigtermState:
    flushing = False  # set by the handler, on the main thread
    flushed = False  # set by the flushing thread when it is done


def _reset_sigterm_state() -> None:  # a forked child has not been asked to stop
    _SigtermState.flushing = _SigtermState.flushed = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_sigterm_state)


def _flush_then_die() -> None:
    try:
        _flush_all()
    finally:
        _SigtermState.flushed = True
        try:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        except (ProcessLookupError, OSError):  # the main thread is gone: the process is ending
            os.kill(os.getpid(), signal.SIGTERM)


def ensure_sigterm_flush() -> bool:
    """Install the flush-then-die SIGTERM handler if it is wanted, nobody else handles SIGTERM and
    this is the main thread. Cheap to call often: his-otel calls it whenever it runs on the main
    thread, so a ``configure()`` made on a worker thread gets its handler at the next chance.

    Returns:
        True when the handler is in place.
    """
    global _warned_off_main
    with _sigterm_lock:
        if not _sigterm_flushes:
            return False
        try:
            current = signal.getsignal(signal.SIGTERM)
        except (ValueError, OSError, AttributeError):  # pragma: no cover - no SIGTERM here
            return False
        if getattr(current, "_his_otel", False):
            return True
        if current != signal.SIG_DFL:
            # SIG_IGN, or the application's own handler: the signal is theirs, and we keep writing
            # while they drain. Not an error.
            return False
        if threading.current_thread() is not threading.main_thread():
            if not _warned_off_main:
                _warned_off_main = True
                text = (
                    "his-otel was configured off the main thread and SIGTERM has no handler: a SIGTERM"
                    " kills the process before pending status rows are written. Rows of finished"
                    " invocations are already written; to cover the rest, call his_otel.configure()"
                    " on the main thread at startup"
                )
                logger.warning(text)
                # Said where a user sees it: at the SIGTERM itself nothing of ours can run.
                notice.tell("sigterm-off-main", text.removeprefix("his-otel "))
            return False

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            # The handler runs on the main thread between two of its bytecodes, maybe while that
            # thread holds a lock the flush needs (a pipeline's, logging's): so it never waits here.
            # A thread writes what is pending, bounded by the shutdown timeout, then sends SIGTERM
            # again; this handler then lets it kill the process, as SIG_DFL would have at once.
            if _SigtermState.flushed:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.raise_signal(signal.SIGTERM)
                return
            if not _SigtermState.flushing:
                _SigtermState.flushing = True
                threading.Thread(target=_flush_then_die, name="his-otel-sigterm", daemon=True).start()

        on_sigterm._his_otel = True  # type: ignore[attr-defined]
        try:
            signal.signal(signal.SIGTERM, on_sigterm)
        except (ValueError, OSError):  # pragma: no cover - an embedded interpreter
            return False
        return True
