"""A long command stopped by SIGTERM (kill, timeout, a container stop) cleans up like Ctrl-C does."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wait_for(cond, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies excluded), read from /proc."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(p.name))
    return out


def test_sigterm_unwinds_with_blocks_and_exits_143(tmp_path):
    code = ("import tempfile, time, sys\n"
            "from profilers.shutdown import exit_cleanly_on_sigterm\n"
            "exit_cleanly_on_sigterm()\n"
            "with tempfile.TemporaryDirectory() as d:\n"
            "    print(d, flush=True)\n"
            "    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    d = Path(p.stdout.readline().strip())
    assert d.is_dir()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 143 and not d.exists()


def test_sigterm_to_eval_removes_its_export_folder_and_stops_its_workers(tmp_path):
    """The real command: `predictors eval` with its measuring child and export worker, killed while working."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    p = subprocess.Popen([sys.executable, "-m", "predictors", "eval", "amd-epyc-zen4-vnni/onnxruntime-cpu",
                          "--backend", "onnxruntime-cpu", "--hyperspaces", "onnxw", "--n", "4", "--rounds", "1",
                          "--out", str(tmp_path / "report")], cwd=ROOT, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        folders = _wait_for(lambda: [d for d in tmp.iterdir() if d.is_dir()], 120, "the export folder")
        _wait_for(lambda: len(_group_members(p.pid)) >= 3, 60, "the measuring child and the export worker")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
        assert rc == 143, p.stderr.read()
        assert not any(d.exists() for d in folders)
        _wait_for(lambda: not _group_members(p.pid), 10, "the workers to exit")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
