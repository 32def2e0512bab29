"""The measurement dataset: an append-only JSON-lines file, one record per (kernel, precision).

Each line is complete and self-describing (config, precision, every Measurement field, fingerprint).
Lines are written with flush + fsync, so a SIGKILL loses at most the line being written; on open, a
torn last line is cut off. Records are keyed by (config, precision), so a resumed collection skips
what is already there and never writes a duplicate.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel

from exporters.kernel_config import KernelConfig

from .measurement import Measurement


class KernelRecord(BaseModel):
    config: KernelConfig
    precision: str
    backend: str
    measurement: Measurement

    def key(self) -> tuple:
        return record_key(self.config, self.precision)


def record_key(config: KernelConfig, precision: str) -> tuple:
    return (config.slug(), precision)


class Dataset:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self.keys = {r.key() for r in self}

    def _repair(self) -> None:
        """Cut a torn trailing line (the process was killed mid-write)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def __iter__(self) -> Iterator[KernelRecord]:
        if not self.path.exists():
            return
        with open(self.path) as f:
            for line in f:
                if line.strip():
                    yield KernelRecord.model_validate_json(line)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: tuple) -> bool:
        return key in self.keys

    def append(self, rec: KernelRecord) -> bool:
        """Append unless the key is already present; returns whether it was written."""
        if rec.key() in self.keys:
            return False
        line = rec.model_dump_json() + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.keys.add(rec.key())
        return True


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
