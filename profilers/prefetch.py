"""Export the next models on the other cores while the pinned profiler measures the current one.

Exporting an INT8 subnet (torch -> ONNX -> static quantization, or Keras -> TFLite converter) takes
3-20 s on this machine; measuring it takes 2-4 s. Done one after the other, an evaluation of 600
subnets is mostly export. The profiler child is pinned to one core (the last by default), so the
exports run in a worker thread pinned to the remaining cores, a few items ahead. Threads a pinned
thread starts (torch, TensorFlow and onnxruntime pools) inherit its affinity on Linux, so the
measured core stays quiet; what they still share is the L3 cache and memory bandwidth, the same
for kernel models and whole networks. While the measuring side waits for exports, it can lend its own core
to a second exporter (:class:`Prefetcher`'s ``helper``), which is off that core again before the wait ends.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Callable, Generic, Iterable, Iterator, TypeVar

if TYPE_CHECKING:
    from .protocol import Protocol

T = TypeVar("T")
R = TypeVar("R")


def _pin_away_from(avoid: int | None) -> set[int]:
    """Pin the calling thread (0 = the calling thread on Linux) to every core but the profiler's ``avoid``;
    the cores it now runs on, empty when nothing was pinned. Used by the prefetch thread and, as the
    initializer, by a :class:`RecycledWorker` child."""
    if avoid is None or not hasattr(os, "sched_setaffinity"):
        return set()
    cores = os.sched_getaffinity(0) - {avoid}
    if cores:
        os.sched_setaffinity(0, cores)
    return cores


def _pin_to(core: int | None) -> None:
    """Pin the calling thread to exactly ``core`` (a helper lent the profiler's core); nothing when None."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


def _child_init(avoid: int | None, parent: int, core: int | None = None) -> None:
    """Initializer of a :class:`RecycledWorker` child: die with the parent, and keep off the profiler's core (or,
    for the helper of a :class:`Prefetcher`, run on exactly ``core``).

    Why the first: an evaluation stopped by SIGTERM (or killed) left its export child alive (seen on the Emerald
    Rapids host), on the cores of the next run's measurements. On Linux the kernel sends the child SIGTERM when
    the thread that started it ends (prctl PR_SET_PDEATHSIG), whatever killed the parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent was gone before the call: nobody will collect this child's work
            os._exit(0)
    if core is not None:
        _pin_to(core)
    else:
        _pin_away_from(avoid)


class Prefetcher(Generic[T, R]):
    """Iterate ``(item, result_or_exception)`` in input order, computing ``fn(item)`` up to ``depth`` ahead.

    ``avoid_core`` is the profiler's core; the worker pins itself to every other core (on a one-core
    machine it shares). Exceptions are returned, not raised, so one bad export is one bad record.

    ``helper``, when given, is a second ``fn`` for the profiler's own core (for example a
    :class:`RecycledWorker` pinned there). It takes items only while the consumer is blocked here (in
    :meth:`wait_idle`, or waiting for its next item), that is while the profiler measures nothing, and control
    returns to the consumer only once the helper has nothing in hand, so no measurement ever shares its core with
    an export. Why: a TFLite evaluation is bound by its exports (about 22 s a network on one core against about
    8 s of measuring), and its later rounds already wait for them, leaving the measuring core idle for most of
    each block.
    """

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], avoid_core: int | None = None, depth: int = 2,
                 helper: Callable[[T], R] | None = None):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._fn, self._helper, self._avoid, self._depth = fn, helper, avoid_core, depth
        self._items = iter(items)
        self._cv = threading.Condition()
        self._results: dict[int, tuple[T, object]] = {}  # sequence number -> (item, result), not yet consumed
        self._taken = 0  # items taken from the iterable so far (the next sequence number)
        self._busy = 0  # items being computed now, by either worker
        self._helper_busy = 0
        self._exhausted = False
        self._lend = False  # True while the consumer is blocked in here: the helper may work
        self._error: BaseException | None = None  # raised by the items iterable itself: handed to the consumer
        self._stop = False
        self._threads = [threading.Thread(target=self._run, args=(fn, False), name="prefetch-export", daemon=True)]
        if helper is not None:
            self._threads.append(threading.Thread(target=self._run, args=(helper, True), name="prefetch-helper",
                                                  daemon=True))

    def _pin(self) -> None:
        cores = _pin_away_from(self._avoid)
        torch = sys.modules.get("torch")
        if cores and torch is not None:  # its pool may predate the pinning; one thread per free core runs here
            torch.set_num_threads(len(cores))

    def _full(self) -> bool:
        return self._busy + len(self._results) >= self._depth

    def _idle(self) -> bool:
        return self._stop or (self._busy == 0 and (self._exhausted or self._full()))

    def _run(self, fn: Callable[[T], R], helper: bool) -> None:
        if helper:
            _pin_to(self._avoid)  # in-process work of a helper belongs on the lent core
        else:
            self._pin()
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or self._exhausted
                                  or (not self._full() and (self._lend or not helper)))
                if self._stop or self._exhausted:
                    return
                try:
                    item = next(self._items)
                except Exception as e:  # noqa: BLE001 - StopIteration, or the iterable failed: no more items
                    self._exhausted = True
                    self._error = None if isinstance(e, StopIteration) else e
                    self._cv.notify_all()
                    return
                seq = self._taken
                self._taken += 1
                self._busy += 1
                self._helper_busy += helper
            try:
                res: object = fn(item)
            except Exception as e:  # noqa: BLE001 - handed to the consumer as data
                res = e
            with self._cv:
                self._busy -= 1
                self._helper_busy -= helper
                self._results[seq] = (item, res)
                self._cv.notify_all()

    def _lend_until(self, ready: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait (lock held) until ``ready()``, the helper working meanwhile; return once it has nothing in hand."""
        self._lend = self._helper is not None
        self._cv.notify_all()
        try:
            return self._cv.wait_for(ready, timeout)
        finally:
            self._lend = False
            self._cv.wait_for(lambda: self._helper_busy == 0)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the workers are idle (``depth`` items ahead are done, or all are): measurements taken then
        share the machine with nothing of ours. Meanwhile the helper, if any, computes on the measuring core. Returns
        False on timeout; even then the helper has finished its item, so the caller's core is free."""
        with self._cv:
            return self._lend_until(self._idle, timeout)

    def __iter__(self) -> Iterator[tuple[T, R | Exception]]:
        for t in self._threads:
            t.start()
        try:
            seq = 0
            while True:
                with self._cv:
                    self._lend_until(lambda: seq in self._results or (self._exhausted and seq >= self._taken))
                    if seq not in self._results:
                        if self._error is not None:
                            raise self._error
                        return
                    got = self._results.pop(seq)
                    self._cv.notify_all()
                seq += 1
                yield got  # type: ignore[misc]
        finally:
            self.close()

    def close(self) -> None:
        """Stop taking items; an item in hand is finished first (an export cannot be interrupted safely)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        for t in self._threads:
            if t.is_alive():
                t.join()


def _call_plainly(fn: Callable[[T], R], item: T) -> R:
    """Run ``fn(item)`` in the child; an exception comes back as a plain RuntimeError that names its type,
    because not every library's exception survives pickling back to the parent."""
    try:
        return fn(item)
    except Exception as e:  # noqa: BLE001 - re-raised across the process boundary
        raise RuntimeError(f"{type(e).__name__}: {e}") from None


class RecycledWorker(Generic[T, R]):
    """``fn(item)`` computed in a child process that is replaced after every ``tasks_per_child`` items.

    Why: TensorFlow's converter leaks in a long-lived process even after ``keras.backend.clear_session``
    (:func:`exporters.tflite_export.release_keras`). On the Zen 4 host an evaluation that exported 108
    networks in one process held 12.4 GB after 36 min and 15.4 GB a minute later, on a 24 GB machine; before
    ``release_keras`` one was killed by the OOM killer after 150 networks. A child that exits every few
    exports returns all of it to the system, whatever the library keeps. It is spawned, not forked (a fork
    would copy the parent's TensorFlow state and threads), so each new child pays the imports once: a few
    seconds per ``tasks_per_child`` exports of 3-20 s each.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one). A child that dies
    (a crash in native code, the OOM killer) fails only the item it was computing, with a RuntimeError that
    says so; the next item gets a fresh child.

    The child keeps off ``avoid_core``; with ``core`` it runs on that core only instead (a :class:`Prefetcher`
    helper, lent the profiler's core while it measures nothing).
    """

    def __init__(self, fn: Callable[[T], R], tasks_per_child: int = 16, avoid_core: int | None = None,
                 core: int | None = None):
        if tasks_per_child < 1:
            raise ValueError(f"tasks_per_child must be >= 1, got {tasks_per_child}")
        self._fn, self._n, self._avoid, self._core = fn, tasks_per_child, avoid_core, core
        self._pool: ProcessPoolExecutor | None = None
        self._done = 0  # items computed by the current child

    def __call__(self, item: T) -> R:
        # The child is replaced here, inside the call, rather than by the pool's own max_tasks_per_child: that one
        # exits the old child after handing back the result and spawns the new one at once, outside any call, and
        # for a helper on the profiler's core both would run beside the next measurement.
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_child_init, initargs=(self._avoid, os.getpid(), self._core))
            self._done = 0
        try:
            return self._pool.submit(_call_plainly, self._fn, item).result()
        except BrokenProcessPool as e:
            self.close()
            raise RuntimeError(f"the worker process died while computing this item ({e})") from None
        finally:
            self._done += 1
            if self._done >= self._n:
                self.close()  # waits for the child to exit

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "RecycledWorker[T, R]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Measured on an Intel Xeon (Ice Lake, AVX-512 VNNI) VM while the other core exported kernel models:
# kernel latencies rose by 1.5% (min of 4 interleaved A/B rounds, three kernel types), but the
# protocol's reference probe (a 256^3 float matmul) rose by a median 32%, so 43% of the records failed
# its fast-state test. Under prefetching the probe measures our own exports, not the neighbours' load,
# and that test is off; the CI and split-half tests still apply. Whole networks in an evaluation are
# measured under the same prefetching as their kernels, so what contention remains is shared.
PREFETCH_MAX_LOAD_FACTOR = 10.0


def under_prefetch(p: "Protocol") -> "Protocol":
    """``p`` with the fast-state probe test relaxed for measuring while the other cores export."""
    return p.model_copy(update={"max_load_factor": max(p.max_load_factor, PREFETCH_MAX_LOAD_FACTOR)})
