"""Export the next models on the other cores while the pinned profiler measures the current one.

Exporting an INT8 subnet (torch -> ONNX -> static quantization, or Keras -> TFLite converter) takes
3-20 s on this machine; measuring it takes 2-4 s. Done one after the other, an evaluation of 600
subnets is mostly export. The profiler child is pinned to one core (the last by default), so the
exports run in a worker thread pinned to the remaining cores, a few items ahead. Threads a pinned
thread starts (torch, TensorFlow and onnxruntime pools) inherit its affinity on Linux, so the
measured core stays quiet; what they still share is the L3 cache and memory bandwidth, the same
for kernel models and whole networks.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
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

_DONE = object()


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


def _child_init(avoid: int | None, parent: int) -> None:
    """Initializer of a :class:`RecycledWorker` child: die with the parent, and keep off the profiler's core.

    Why the first: an evaluation stopped by SIGTERM (or killed) left its export child alive (seen on the Emerald
    Rapids host), on the cores of the next run's measurements. On Linux the kernel sends the child SIGTERM when
    the thread that started it ends (prctl PR_SET_PDEATHSIG), whatever killed the parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent was gone before the call: nobody will collect this child's work
            os._exit(0)
    _pin_away_from(avoid)


class Prefetcher(Generic[T, R]):
    """Iterate ``(item, result_or_exception)`` in input order, computing ``fn(item)`` up to ``depth`` ahead.

    ``avoid_core`` is the profiler's core; the worker pins itself to every other core (on a one-core
    machine it shares). Exceptions are returned, not raised, so one bad export is one bad record.
    """

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], avoid_core: int | None = None, depth: int = 2):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._fn, self._items, self._avoid = fn, items, avoid_core
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._idle = threading.Event()  # set while the worker computes nothing (queue full, or done)
        self._thread = threading.Thread(target=self._run, name="prefetch-export", daemon=True)

    def _pin(self) -> None:
        cores = _pin_away_from(self._avoid)
        torch = sys.modules.get("torch")
        if cores and torch is not None:  # its pool may predate the pinning; one thread per free core runs here
            torch.set_num_threads(len(cores))

    def _run(self) -> None:
        self._pin()
        try:
            for item in self._items:
                if self._stop.is_set():
                    return
                self._idle.clear()
                try:
                    res: object = self._fn(item)
                except Exception as e:  # noqa: BLE001 - handed to the consumer as data
                    res = e
                while not self._stop.is_set():
                    try:
                        self._q.put((item, res), timeout=0.2)
                        break
                    except queue.Full:
                        self._idle.set()  # blocked until the consumer takes one
                        continue
        finally:
            self._idle.set()
            self._q.put(_DONE)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the worker is idle (its queue is full or its items are done): measurements taken then
        share the machine with nothing of ours. Returns False on timeout."""
        return self._idle.wait(timeout)

    def __iter__(self) -> Iterator[tuple[T, R | Exception]]:
        self._thread.start()
        try:
            while True:
                got = self._q.get()
                if got is _DONE:
                    return
                yield got
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.1)
            except queue.Empty:
                pass


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
    """

    def __init__(self, fn: Callable[[T], R], tasks_per_child: int = 16, avoid_core: int | None = None):
        if tasks_per_child < 1:
            raise ValueError(f"tasks_per_child must be >= 1, got {tasks_per_child}")
        self._fn, self._n, self._avoid = fn, tasks_per_child, avoid_core
        self._pool: ProcessPoolExecutor | None = None

    def __call__(self, item: T) -> R:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_child_init, initargs=(self._avoid, os.getpid()),
                                             max_tasks_per_child=self._n)
        try:
            return self._pool.submit(_call_plainly, self._fn, item).result()
        except BrokenProcessPool as e:
            self.close()
            raise RuntimeError(f"the worker process died while computing this item ({e})") from None

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
