"""A function for tests of :class:`profilers.prefetch.RecycledWorker`: its child processes import this module by
name, so it imports nothing heavy (spawning a child costs only the interpreter's start)."""
from __future__ import annotations

import os


def probe(item: str):
    """What the child process is, or a failure of the kind asked for."""
    if item == "pid":
        return os.getpid()
    if item == "affinity":
        return sorted(os.sched_getaffinity(0))
    if item == "raise":
        raise KeyError("no such kernel")
    if item == "sleep":
        import time

        time.sleep(120)  # busy for longer than any test waits: only the parent's death ends it
        return None
    if item == "die":
        os._exit(3)  # as a segfault in native code or the OOM killer would end it
    raise ValueError(f"unknown probe {item!r}")
