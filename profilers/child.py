"""The measuring child: ``python -m profilers.child CORE``, one JSON request per line on stdin.

Runs pinned to CORE. The protocol channel is a private dup of the original stdout; fd 1 is pointed
at stderr so that anything a runtime prints cannot corrupt the channel.

Request: ``{"backend": ..., "path": ..., "protocol": {...}}``. Reply: ``{"status": "ok", "stats": {...}}``
or ``{"status": "not-a-model" | "runtime-error", "error": "..."}``.

Fault injection for tests: with ``HIL_PROFILER_FAULT=segv`` the child kills itself with SIGSEGV after
loading a model whose file name contains ``crash`` (no portable model reliably crashes a given
runtime version, and the crash path must be tested).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path


def main() -> None:
    core = int(sys.argv[1])
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    try:
        os.sched_setaffinity(0, {core})
    except OSError:
        pass
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    from .protocol import LoadProbe, Protocol, run_protocol
    from .runners import ModelLoadError, make_runner

    probe = LoadProbe()
    probe.calibrate()

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            runner = make_runner(req["backend"], req["path"])
            if os.environ.get("HIL_PROFILER_FAULT") == "segv" and "crash" in Path(req["path"]).name:
                os.kill(os.getpid(), signal.SIGSEGV)
            stats = run_protocol(runner, Protocol.model_validate(req["protocol"]), probe=probe)
            reply = {"status": "ok", "stats": stats}
        except ModelLoadError as e:
            reply = {"status": "not-a-model", "error": str(e)}
        except Exception as e:  # a runtime error while running: report it, keep serving
            reply = {"status": "runtime-error", "error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"}
        channel.write(json.dumps(reply) + "\n")
        channel.flush()


if __name__ == "__main__":
    main()
