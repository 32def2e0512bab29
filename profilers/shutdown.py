"""SIGTERM as a clean exit for the long-running command-line tools.

Python's default SIGTERM action ends the process at once: no ``finally`` block, no ``with`` exit. An
``eval`` or ``collect`` stopped that way (by ``kill``, ``timeout``, a container stop or a CI runner) left
its export folder in /tmp behind and its worker children to die on their own. Raising ``SystemExit``
instead unwinds the stack like Ctrl-C does: temporary folders are removed, worker processes are stopped,
and the results already appended to ``results.jsonl`` are all there is to resume from (each is one
complete line, written before the next network starts).
"""
from __future__ import annotations

import signal
import sys
from types import FrameType


def _exit(signum: int, _frame: FrameType | None) -> None:
    # Ignore a second SIGTERM while unwinding, so the cleanup itself is not cut short.
    signal.signal(signum, signal.SIG_IGN)
    sys.exit(128 + signum)  # 143 for SIGTERM, the shell's convention


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit(143)`` in the main thread (call once, from a CLI's ``main``)."""
    signal.signal(signal.SIGTERM, _exit)
