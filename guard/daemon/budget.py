"""Reading a message under a time budget, outside the event loop.

Parsing and classifying one message reads attacker-written text; however the patterns and
parsers are bounded, a message must never be able to stop the daemon. So the executor hands
the raw bytes to an *analyser* and gets back the parsed message, the verdict and the digest's
facts (:class:`Analysed`):

* :class:`ProcessAnalyser` (``guard run``): one worker process per watched mailbox, forked from
  guard with the classifier already in memory (it holds compiled lambdas and cannot be
  pickled). Each message gets ``daemon.message_time_budget_seconds``; past it the worker is
  killed (SIGKILL: a pure-Python regex or HTML parser cannot be interrupted in a thread) and
  :class:`BudgetExceeded` is raised; the next message starts a new worker (a fork, a few ms).
  The event loop stays free meanwhile: IMAP IDLE, /healthz and the other accounts go on.
  A worker that dies (out of memory, a crash in C) raises :class:`WorkerDied`. A reload
  (SIGHUP: a new classifier) starts a new worker.
* :class:`InlineAnalyser`: the same work in the calling thread, no budget (the demo, and unit
  tests with fake classifiers).

The worker only parses and classifies: it never touches the journal (a SQLite connection must not
cross a fork), the mailbox or the mailer, and ignores SIGINT (a Ctrl-C is the parent's to handle).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass

from guard.digest.records import facts_of
from guard.mail.message import ParsedMessage, parse

log = logging.getLogger("guard.daemon.budget")


@dataclass(frozen=True)
class Analysed:
    msg: ParsedMessage
    verdict: object  # guard.classification.verdict.Verdict
    facts: dict


class BudgetExceeded(Exception):
    """The message took longer than its time budget to parse and classify."""


class WorkerDied(Exception):
    """The worker process ended while reading a message (killed, out of memory, a crash in C)."""


class AnalysisFailed(Exception):
    """Parsing or classifying raised: ``str(self)`` is the exception's type name."""


def analyse(raw: bytes, classifier) -> Analysed:
    msg = parse(raw)
    return Analysed(msg, classifier.classify(msg), facts_of(msg))


class InlineAnalyser:
    """In the calling thread, no budget."""

    budget_seconds: float | None = None

    async def analyse(self, raw: bytes, classifier) -> Analysed:
        try:
            return analyse(raw, classifier)
        except Exception as exc:
            raise AnalysisFailed(type(exc).__name__) from exc

    async def close(self) -> None:
        return None


def _worker_main(conn, parent_end, classifier) -> None:  # pragma: no cover - runs in the child
    # the parent's end, inherited by the fork: closed, so that the parent's death is an EOF here
    parent_end.close()
    # the parent's asyncio signal handling (a wakeup fd shared with it) must not fire here
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)
        try:
            result = ("ok", analyse(raw, classifier))
        except Exception as exc:
            result = ("error", type(exc).__name__)
        try:
            conn.send(result)
        except Exception as exc:  # e.g. not picklable
            conn.send(("error", f"{type(exc).__name__} returning the result"))


class ProcessAnalyser:
    """A forked worker process, killed when a message exceeds ``budget_seconds``."""

    def __init__(self, budget_seconds: float) -> None:
        self.budget_seconds = budget_seconds
        self._proc = None
        self._conn = None
        self._classifier = None
        #: worker processes started (tests, the log)
        self.starts = 0
        self._last_exit: int | None = None

    def _start(self, classifier) -> None:
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker_main, args=(child, parent, classifier), name="guard-analyser", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn, self._classifier = proc, parent, classifier
        self.starts += 1

    def _kill(self) -> None:
        proc, conn, self._proc, self._conn, self._classifier = self._proc, self._conn, None, None, None
        if conn is not None:
            conn.close()
        if proc is not None and proc.is_alive():
            proc.kill()
        if proc is not None:
            proc.join(5)

    async def analyse(self, raw: bytes, classifier) -> Analysed:
        """One message: its :class:`Analysed`, or the exception :meth:`analyse_many` gives for it, raised."""
        result = (await self.analyse_many([raw], classifier))[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def analyse_many(self, raws: list[bytes], classifier) -> list[Analysed | Exception]:
        """Several messages streamed to the worker at once (one write of all of them, from a thread;
        the results read as they come), so that the worker goes from one message to the next without
        waiting for the event loop. Each message still has its own budget, counted from the moment the
        worker could start it (the previous result's arrival): past it the worker is killed, that
        message gets :class:`BudgetExceeded` and the rest go to a new worker. Returns, per message in
        order, its :class:`Analysed` or the exception (:class:`BudgetExceeded`, :class:`WorkerDied`,
        :class:`AnalysisFailed`) that :meth:`analyse` would have raised.

        A result already waiting in the pipe is taken without arming a reader and a timer for it
        (the worker ahead of the event loop: the common case in a backlog); it came back within
        its budget, as it would have been seen to at once had the event loop been waiting."""
        out: list[Analysed | Exception] = []
        loop = asyncio.get_running_loop()
        while len(out) < len(raws):
            if self._proc is not None and (self._classifier is not classifier or not self._proc.is_alive()):
                self._kill()
            if self._proc is None:
                self._start(classifier)
            conn, todo = self._conn, raws[len(out):]
            writer = loop.run_in_executor(None, _send_all, conn, todo)
            try:
                for _ in todo:
                    if not conn.poll(0):
                        ready = loop.create_future()
                        fd = conn.fileno()
                        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
                        try:
                            await asyncio.wait_for(ready, self.budget_seconds)
                        finally:
                            loop.remove_reader(fd)
                    status, value = conn.recv()
                    out.append(value if status == "ok" else AnalysisFailed(value))
            except asyncio.TimeoutError:
                await self._kill_streaming(writer)
                out.append(BudgetExceeded(f"time budget exceeded ({self.budget_seconds:g} s)"))
                continue
            except (EOFError, OSError, BrokenPipeError):
                await self._kill_streaming(writer)
                out.append(WorkerDied(f"the analyser process died (exit {self._last_exit})"))
                continue
            except BaseException:
                await self._kill_streaming(writer)  # cancelled (stopping): the worker may be mid-message
                raise
            try:
                await writer
            except Exception:  # pragma: no cover - every result came back, so every message went out
                self._kill()
        return out

    async def _kill_streaming(self, writer) -> None:
        """Kill the worker first (a write blocked on its full pipe then fails), then close the pipe."""
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()
        if proc is not None:
            await asyncio.get_running_loop().run_in_executor(None, proc.join, 5)
            self._last_exit = proc.exitcode
        try:
            await writer
        except Exception:
            pass
        self._kill()

    async def close(self) -> None:
        self._kill()


def _send_all(conn, raws: list[bytes]) -> None:
    for raw in raws:
        conn.send_bytes(raw)
