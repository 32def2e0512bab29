"""Test fixture: the phone's side of ADB (adbd) over loopback TCP, so the Android agent can be tested without a phone.

Not a product feature. It speaks the ADB wire protocol as adbd does to a protocol-v1 host (adb-shell 0.4.4), serves
the hand-assembled Pixel 4 fixture in ``tests/fixtures/pixel4/`` and runs pushed ``benchmark_model`` invocations
for real on the local LiteRT interpreter::

    with AdbPeer(tmp_path / "phone") as peer:           # or the ``adb_peer`` pytest fixture
        dev = AndroidDevice(f"127.0.0.1:{peer.port}", load_profile("pixel4"), binary, key_dir=tmp_path)
        dev.connect()
        peer.faults.drop_on = r"benchmark_model"         # fault injection, settable at any time
        peer.commands, peer.pushed, peer.tasksets        # what the host did

What it implements
------------------
* **Wire.** 24-byte little-endian headers ``command, arg0, arg1, data_length, data_crc32, magic`` with
  ``magic == command ^ 0xffffffff`` and ``data_crc32`` the byte sum of the payload (protocol v1; the host announces
  0x01000000, so checksums are computed and checked both ways). A bad magic, bad checksum, unknown command or an
  oversized payload from the host drops the connection, as adbd does (recorded in ``protocol_errors``).
* **Handshake and auth** (``ro.adb.secure=1``). Host ``CNXN`` -> ``AUTH TOKEN`` (20 random bytes). ``AUTH
  SIGNATURE`` is verified against every trusted key: RSASSA-PKCS1-v1_5 with a SHA-1 DigestInfo over the raw token
  (adb treats the token as an already computed SHA-1 digest; adb-shell's ``PythonRSASigner.Sign`` signs with its
  ``SHA-1-PREHASHED`` pseudo-hash), checked with ``cryptography``. A match -> ``CNXN`` with the device banner;
  otherwise a fresh ``TOKEN``. ``AUTH RSAPUBLICKEY`` (Android's 524-byte ``RSAPublicKey`` struct, base64, then
  `` user@host``) is parsed and checked for consistency (modulus size, ``n0inv``, ``rr``); then, as if the user
  tapped *Allow* (``accept_new_keys``), the key is trusted and ``CNXN`` sent, or (``accept_new_keys=False`` /
  ``faults.refuse_auth``) never answered, so the host times out as with an unanswered dialog.
* **Streams.** ``OPEN`` -> ``OKAY(local, remote)``; ``WRTE`` both ways with one-packet-in-flight flow control
  (every ``WRTE`` is acknowledged by ``OKAY`` before the next one on that stream); ``CLSE`` from the device when a
  command ends, and in answer to the host's ``CLSE``. Services: ``shell:<cmd>`` and ``exec:<cmd>`` (protocol v1:
  no exit status, stdout and stderr on one stream, no pty so no CRLF), ``sync:``, ``root:`` (refused on a user
  build); others are closed (``CLSE(0, remote)``).
* **Sync.** ``SEND path,mode`` + ``DATA``... + ``DONE mtime`` -> ``OKAY`` (parents created: the device announces
  ``fixed_push_mkdir``), ``STAT`` (lstat: mode, size, mtime; zeros when absent), ``RECV`` (``DATA`` chunks of at most
  64 KiB, ``DONE``; ``FAIL`` with a reason), ``LIST`` (``DENT``s then ``DONE``), ``QUIT``. Files live under the
  peer's ``root`` directory at their device path; ``pushed`` maps device path -> local path.
* **Shell.** A small mksh-like interpreter: ``;``, ``&&``, ``||``, ``|``, ``&`` (run in the foreground), ``!``,
  quotes, ``\\``, ``$VAR``/``${VAR}``/``$?``/``$$``/``$#``/``$1``.., ``$(...)`` and backquotes, globbing against
  the device filesystem, ``for ... in ...; do ...; done``, ``if/elif/else/fi``, ``{ ...; }``, ``( ... )``, ``VAR=x``,
  redirections ``>``, ``>>``, ``<``, ``N>&M``, ``2>/dev/null``. Commands: ``getprop [key]``, ``setprop``,
  ``cat``, ``echo``, ``printf``, ``id``, ``whoami``, ``mkdir [-p]``, ``chmod``, ``rm [-rf]``, ``touch``, ``ls
  [-l]``, ``uname``, ``su`` (when the phone has it), ``taskset MASK cmd`` (recorded in ``tasksets``), ``sh -c``,
  ``test``/``[``, ``true``, ``false``, ``exit``, ``sleep``, ``cd``, ``pwd``, ``export``, ``which``, ``command -v``,
  ``head``, ``tail``, ``grep``, ``wc``, ``nproc``, ``getenforce``, ``cmd``; running a file by path (permission
  checked; ``#!`` scripts interpreted; a file named ``benchmark_model`` is emulated, see below). Anything else:
  ``/system/bin/sh: foo: inaccessible or not found``, status 127. Permissions follow the fixture's modes: the shell
  user (uid 2000) cannot write /sys or read ``cpuinfo_cur_freq`` (0400); ``rooted=True`` makes adbd run as root.
  Writing ``performance``/``powersave`` to a policy's ``scaling_governor`` moves its ``scaling_cur_freq`` to the
  max/min, as the kernel would.
* **benchmark_model.** Flags ``--graph --num_threads --warmup_runs --warmup_min_secs --num_runs --min_secs
  --max_secs --run_delay --use_xnnpack --enable_op_profiling`` and others (unknown ones are reported as
  ``Unconsumed cmdline flags``). The pushed .tflite runs for real with ``ai_edge_litert`` (random inputs of the
  right dtype and shape; ``--use_xnnpack=false`` -> built-in kernels), with benchmark_model's loop semantics
  (runs continue until both ``--num_runs`` and ``--min_secs`` are reached, stop past ``--max_secs``) and its
  output format (see ``profilers/android/benchmark_output.py``); missing or broken models print its failure text
  and exit 1.

Fault injection: :class:`Faults` (``peer.faults``), read at the moment each fault could fire.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import fnmatch
import glob as globmod
import json
import math
import os
import posixpath
import re
import secrets
import shutil
import socket
import stat as statmod
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "pixel4"

# --------------------------------------------------------------------------------------------- wire constants


def _wire(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


A_SYNC, A_CNXN, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_AUTH = (_wire(c) for c in (
    b"SYNC", b"CNXN", b"OPEN", b"OKAY", b"CLSE", b"WRTE", b"AUTH"))
COMMAND_NAMES = {v: k for k, v in {"SYNC": A_SYNC, "CNXN": A_CNXN, "OPEN": A_OPEN, "OKAY": A_OKAY,
                                   "CLSE": A_CLSE, "WRTE": A_WRTE, "AUTH": A_AUTH}.items()}
A_VERSION = 0x01000001  # what adbd announces; the connection runs at min(host, device), i.e. v1 with adb-shell
MAX_PAYLOAD = 1024 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
TOKEN_SIZE = 20
HEADER = struct.Struct("<6I")

# sync ids
S_STAT, S_LIST, S_SEND, S_RECV, S_DENT, S_DONE, S_DATA, S_OKAY, S_FAIL, S_QUIT = (_wire(c) for c in (
    b"STAT", b"LIST", b"SEND", b"RECV", b"DENT", b"DONE", b"DATA", b"OKAY", b"FAIL", b"QUIT"))
SYNC_DATA_MAX = 64 * 1024

SHELL_UID, ROOT_UID = 2000, 0
SH = "/system/bin/sh"


def checksum(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


def pack_message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    return HEADER.pack(command, arg0, arg1, len(data), checksum(data), command ^ 0xFFFFFFFF) + data


# --------------------------------------------------------------------------------------------- auth


def parse_android_pubkey(blob: bytes):
    """``AUTH RSAPUBLICKEY`` payload (``base64(RSAPublicKey struct) user@host\\0``) -> a ``cryptography`` RSA
    public key. Raises ValueError when the struct is malformed or inconsistent (adbd ignores such keys)."""
    from adb_shell.auth.keygen import (ANDROID_PUBKEY_MODULUS_SIZE, ANDROID_PUBKEY_MODULUS_SIZE_WORDS,
                                       ANDROID_RSAPUBLICKEY_STRUCT)
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    text = blob.split(b"\0", 1)[0].decode("ascii", "replace").strip()
    if not text:
        raise ValueError("empty public key")
    try:
        raw = base64.b64decode(text.split()[0], validate=True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"public key is not base64: {e}") from None
    if len(raw) != struct.calcsize(ANDROID_RSAPUBLICKEY_STRUCT):
        raise ValueError(f"public key struct is {len(raw)} bytes, expected "
                         f"{struct.calcsize(ANDROID_RSAPUBLICKEY_STRUCT)}")
    words, n0inv, mod_le, rr_le, e = struct.unpack(ANDROID_RSAPUBLICKEY_STRUCT, raw)
    if words != ANDROID_PUBKEY_MODULUS_SIZE_WORDS:
        raise ValueError(f"modulus size {words} words, expected {ANDROID_PUBKEY_MODULUS_SIZE_WORDS}")
    n = int.from_bytes(mod_le, "little")
    if n.bit_length() != ANDROID_PUBKEY_MODULUS_SIZE * 8 or n % 2 == 0:
        raise ValueError("modulus is not a 2048-bit odd number")
    if (n0inv * n + 1) % (1 << 32) != 0:  # n0inv = -1/n mod 2^32
        raise ValueError("n0inv does not match the modulus")
    if int.from_bytes(rr_le, "little") != pow(2, ANDROID_PUBKEY_MODULUS_SIZE * 8 * 2, n):
        raise ValueError("rr does not match the modulus")
    if e not in (3, 65537):
        raise ValueError(f"exponent {e} (adbd accepts 3 and 65537)")
    return RSAPublicNumbers(e, n).public_key()


def verify_token_signature(public_key, token: bytes, signature: bytes) -> bool:
    """adb's signature: PKCS#1 v1.5 over a SHA-1 DigestInfo whose digest is the raw 20-byte token."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    try:
        public_key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
        return True
    except (InvalidSignature, ValueError):
        return False


# --------------------------------------------------------------------------------------------- faults


@dataclasses.dataclass
class Faults:
    """What goes wrong, set at run time (``peer.faults.drop_on = "benchmark_model --graph"``). Patterns are regexes
    searched in the whole shell command as the host sent it (without ``shell:``), or matched against ``sync:`` when
    the host opens the file-sync service (``drop_on = "^sync:$"`` cuts the connection when a push starts; with
    ``drop_after_bytes`` the sync replies are cut instead)."""

    refuse_auth: bool = False  # a new key is never answered (nobody taps Allow): the host's auth times out
    garbage_on_connect: bool = False  # answer the host's CNXN with garbage
    drop_on: str | None = None  # cut the connection when a matching shell command starts ...
    drop_after_bytes: int | None = None  # ... or, if set, once it has printed this many bytes
    drop_mode: str = "fin"  # fin: orderly close; rst: reset; silent: stop answering, socket left open
    garbage_on: str | None = None  # answer a matching shell command's OPEN with garbage instead of OKAY
    garbage: bytes = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    delay_s: float = 0.0  # sleep before every message the peer sends
    stall_on: str | None = None  # a matching shell command prints nothing for stall_s before it runs
    stall_s: float = 0.0
    benchmark_signal: int | None = None  # benchmark_model dies on this signal after its warm-up (11: SIGSEGV)
    times: int | None = None  # command faults (drop/garbage/stall) fire this many more times; None: always

    def match(self, pattern: str | None, command: str) -> bool:
        if pattern is None or (self.times is not None and self.times <= 0):
            return False
        if re.search(pattern, command) is None:
            return False
        if self.times is not None:
            self.times -= 1
        return True


class _ConnectionGone(Exception):
    """The connection died (or the host closed the stream): the running command stops, like on SIGHUP."""


class _Exit(Exception):
    def __init__(self, status: int):
        self.status = status


# --------------------------------------------------------------------------------------------- filesystem


class FsError(Exception):
    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


WRITABLE_BY_SHELL = ("/data/local/tmp", "/sdcard", "/storage/emulated/0")


class DeviceFS:
    """The phone's filesystem: files under ``root`` at their device path; modes and owners kept here (the host's
    own permissions stay permissive), so the shell user sees Android's permissions."""

    def __init__(self, root: Path, fixture: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_real = Path(os.path.realpath(self.root))
        self.meta: dict[str, tuple[int, int]] = {}  # canonical device path -> (permission bits, uid)
        self.lock = threading.RLock()
        self.on_write: list[Callable[[str], None]] = []
        self._materialize(fixture)

    # -- paths
    @staticmethod
    def norm(path: str, cwd: str = "/") -> str:
        p = posixpath.normpath(posixpath.join(cwd, path))
        return "/" + p.lstrip("/") if p != "/" else "/"

    def host(self, path: str) -> Path:
        return self.root / self.norm(path).lstrip("/")

    def canonical(self, path: str) -> str:
        """Device path with symlinks resolved (where the target exists or not)."""
        real = Path(os.path.realpath(self.host(path)))
        try:
            rel = real.relative_to(self.root_real)
        except ValueError:
            return self.norm(path)
        return "/" + str(rel).replace(os.sep, "/") if str(rel) != "." else "/"

    def _materialize(self, fixture: Path) -> None:
        data = json.loads((fixture / "files.json").read_text())
        for d, mode, uid in (("/data/local/tmp", 0o771, SHELL_UID), ("/data", 0o771, 1000), ("/system/bin", 0o755, 0),
                             ("/vendor/bin", 0o755, 0), ("/sdcard", 0o770, 0), ("/proc", 0o555, 0),
                             ("/sys", 0o755, 0)):
            self.host(d).mkdir(parents=True, exist_ok=True)
            self.meta[d] = (mode, uid)
        for path, content in data["files"].items():
            h = self.host(path)
            h.parent.mkdir(parents=True, exist_ok=True)
            h.write_text(content)
        for path, target in data.get("symlinks", {}).items():
            h = self.host(path)
            h.parent.mkdir(parents=True, exist_ok=True)
            if h.is_symlink() or h.exists():
                h.unlink()
            os.symlink(target, h)
        modes = data.get("modes", {})
        for path in data["files"]:
            mode = 0o444 if path.startswith("/proc/") else 0o644
            for pattern, m in modes.items():
                if fnmatch.fnmatchcase(path, pattern):
                    mode = int(m, 8)
                    break
            self.meta[path] = (mode, ROOT_UID)

    # -- metadata
    def lookup(self, path: str, follow: bool = True) -> os.stat_result | None:
        h = self.host(path)
        try:
            return h.stat() if follow else h.lstat()
        except OSError:
            return None

    def mode_uid(self, path: str) -> tuple[int, int]:
        canon = self.canonical(path)
        if canon in self.meta:
            return self.meta[canon]
        st = self.lookup(path)
        if st is not None and statmod.S_ISDIR(st.st_mode):
            under_tmp = any(canon == w or canon.startswith(w + "/") for w in WRITABLE_BY_SHELL)
            return (0o775, SHELL_UID) if under_tmp else (0o755, ROOT_UID)
        return 0o644, ROOT_UID

    def can(self, path: str, uid: int, perm: str) -> bool:
        if uid == ROOT_UID:
            if perm == "x":  # root still needs some x bit on a regular file
                st = self.lookup(path)
                return st is None or statmod.S_ISDIR(st.st_mode) or bool(self.mode_uid(path)[0] & 0o111)
            return True
        mode, owner = self.mode_uid(path)
        bit = {"r": 4, "w": 2, "x": 1}[perm]
        if owner == uid:
            return bool(mode & (bit << 6))
        if owner == SHELL_UID or uid == SHELL_UID and owner != ROOT_UID:
            return bool(mode & (bit << 3)) or bool(mode & bit)
        return bool(mode & bit)

    # -- operations (device semantics; FsError(reason) as the tools print it)
    def read(self, path: str, uid: int) -> bytes:
        st = self.lookup(path)
        if st is None:
            raise FsError(path, "No such file or directory")
        if statmod.S_ISDIR(st.st_mode):
            raise FsError(path, "Is a directory")
        if not self.can(path, uid, "r"):
            raise FsError(path, "Permission denied")
        with self.lock:
            return self.host(path).read_bytes()

    def _check_parent_writable(self, path: str, uid: int) -> None:
        parent = posixpath.dirname(self.norm(path))
        st = self.lookup(parent)
        if st is None:
            raise FsError(path, "No such file or directory")
        if not statmod.S_ISDIR(st.st_mode):
            raise FsError(path, "Not a directory")
        if uid != ROOT_UID and (parent.startswith(("/sys", "/proc")) or not self.can(parent, uid, "w")):
            raise FsError(path, "Permission denied")

    def write(self, path: str, data: bytes, uid: int, append: bool = False, mode: int | None = None) -> None:
        with self.lock:
            st = self.lookup(path)
            if st is not None:
                if statmod.S_ISDIR(st.st_mode):
                    raise FsError(path, "Is a directory")
                if not self.can(path, uid, "w"):
                    raise FsError(path, "Permission denied")
            else:
                self._check_parent_writable(path, uid)
                self.meta[self.canonical(path)] = (0o666 if uid == SHELL_UID else 0o644, uid) if mode is None \
                    else (mode & 0o7777, uid)
            h = self.host(path)
            with open(h, "ab" if append else "wb") as f:
                f.write(data)
            if mode is not None:
                self.meta[self.canonical(path)] = (mode & 0o7777, self.mode_uid(path)[1])
        for hook in self.on_write:
            hook(self.canonical(path))

    def mkdir(self, path: str, uid: int, parents: bool = False, mode: int = 0o775) -> None:
        with self.lock:
            p = self.norm(path)
            st = self.lookup(p)
            if st is not None:
                if parents and statmod.S_ISDIR(st.st_mode):
                    return
                raise FsError(path, "File exists")
            parent = posixpath.dirname(p)
            if self.lookup(parent) is None:
                if not parents:
                    raise FsError(path, "No such file or directory")
                self.mkdir(parent, uid, True, mode)
            self._check_parent_writable(p, uid)
            self.host(p).mkdir()
            self.meta[self.canonical(p)] = (mode, uid)

    def remove(self, path: str, uid: int, recursive: bool = False) -> None:
        with self.lock:
            st = self.lookup(path, follow=False)
            if st is None:
                raise FsError(path, "No such file or directory")
            self._check_parent_writable(path, uid)
            h = self.host(path)
            if statmod.S_ISDIR(st.st_mode):
                if not recursive:
                    raise FsError(path, "Is a directory")
                shutil.rmtree(h)
            else:
                h.unlink()
            canon = self.norm(path)
            for k in [k for k in self.meta if k == canon or k.startswith(canon.rstrip("/") + "/")]:
                del self.meta[k]

    def chmod(self, path: str, mode: int, uid: int) -> None:
        with self.lock:
            if self.lookup(path) is None:
                raise FsError(path, "No such file or directory")
            old, owner = self.mode_uid(path)
            if uid not in (ROOT_UID, owner):
                raise FsError(path, "Operation not permitted")
            self.meta[self.canonical(path)] = (mode & 0o7777, owner)

    def listdir(self, path: str, uid: int) -> list[str]:
        st = self.lookup(path)
        if st is None:
            raise FsError(path, "No such file or directory")
        if not statmod.S_ISDIR(st.st_mode):
            return [posixpath.basename(self.norm(path))]
        if not self.can(path, uid, "r"):
            raise FsError(path, "Permission denied")
        return sorted(os.listdir(self.host(path)))

    def glob(self, pattern: str, cwd: str = "/") -> list[str]:
        absolute = pattern.startswith("/")
        full = self.norm(pattern, cwd) if not pattern.endswith("/") else self.norm(pattern, cwd) + "/"
        hits = globmod.glob(full.lstrip("/"), root_dir=self.root)
        out = ["/" + h for h in hits]
        if not absolute:
            base = self.norm(cwd).rstrip("/") + "/"
            out = [h[len(base):] if h.startswith(base) else h for h in out]
        return sorted(out)

    def sync_stat(self, path: str) -> tuple[int, int, int]:
        """(mode with file type bits, size, mtime) as adbd's STAT (lstat) reports; zeros when absent."""
        st = self.lookup(path, follow=False)
        if st is None:
            return 0, 0, 0
        if statmod.S_ISLNK(st.st_mode):
            return statmod.S_IFLNK | 0o777, len(os.readlink(self.host(path))), int(st.st_mtime)
        perm = self.mode_uid(path)[0]
        return statmod.S_IFMT(st.st_mode) | perm, st.st_size if statmod.S_ISREG(st.st_mode) else 4096, \
            int(st.st_mtime)


# --------------------------------------------------------------------------------------------- streams


class _Stream:
    """One ADB stream on the device side. Writes are queued and sent one WRTE at a time: the next WRTE waits for
    the host's OKAY, as adbd's flow control does for protocol v1."""

    def __init__(self, conn: "_Connection", local_id: int, remote_id: int, service: str):
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self.pending: collections.deque[bytes] = collections.deque()
        self.awaiting_okay = False
        self.closing = False
        self.closed = False
        self.produced = 0
        self.drop_after: int | None = None
        self.drop_when_flushed = False
        self.sync_buf = bytearray()
        self.sync_send: list | None = None  # [device path, mode, bytearray] while a SEND is in progress

    def alive(self) -> bool:
        return not (self.closed or self.conn.dead)

    def write(self, data: bytes | str, block: bool = True) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if not data:
            return
        conn = self.conn
        with conn.lock:
            if not self.alive():
                raise _ConnectionGone()
            if self.drop_after is not None and self.produced + len(data) >= self.drop_after:
                data = data[:max(0, self.drop_after - self.produced)]
                self.drop_when_flushed = True
            self.produced += len(data)
            step = max(1, conn.max_payload)
            self.pending.extend(data[i:i + step] for i in range(0, len(data), step))
            self.pump()
            if self.drop_when_flushed:
                raise _ConnectionGone()
            while block and len(self.pending) > 32 and self.alive():
                conn.cv.wait(0.5)

    def finish(self) -> None:
        with self.conn.lock:
            self.closing = True
            self.pump()

    def pump(self) -> None:
        """Send what the flow control allows (caller holds the connection lock)."""
        conn = self.conn
        if not self.alive() or self.awaiting_okay:
            return
        if self.pending:
            chunk = self.pending.popleft()
            conn.send(A_WRTE, self.local_id, self.remote_id, chunk)
            self.awaiting_okay = True
            conn.cv.notify_all()
            if not self.pending and self.drop_when_flushed:
                conn.kill(conn.peer.faults.drop_mode)
        elif self.drop_when_flushed:
            conn.kill(conn.peer.faults.drop_mode)
        elif self.closing:
            self.closed = True
            conn.streams.pop(self.local_id, None)
            conn.send(A_CLSE, self.local_id, self.remote_id)
            conn.cv.notify_all()


# --------------------------------------------------------------------------------------------- connection


class _Connection:
    def __init__(self, peer: "AdbPeer", sock: socket.socket, addr):
        self.peer = peer
        self.sock = sock
        self.addr = addr
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)
        self.dead = False
        self.online = False
        self.token: bytes | None = None
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_payload = peer.max_payload
        self.host_version: int | None = None
        self.uid = ROOT_UID if peer.rooted else SHELL_UID

    # -- low level
    def _recv_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
                if hasattr(socket, "TCP_QUICKACK"):  # no delayed ACK: adb-shell writes header and payload
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # separately (Nagle)
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def send_raw(self, data: bytes) -> None:
        delay = self.peer.faults.delay_s
        if delay > 0:
            time.sleep(delay)
        with self.lock:
            if self.dead:
                raise _ConnectionGone()
            try:
                self.sock.sendall(data)
            except OSError:
                self.kill("fin", injected=False)
                raise _ConnectionGone() from None

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        self.send_raw(pack_message(command, arg0, arg1, data))

    def kill(self, mode: str = "fin", injected: bool = True) -> None:
        """Close the connection: ``fin`` (orderly), ``rst`` (reset) or ``silent`` (say nothing more, keep the socket
        open). ``injected``: a fault did it (recorded in ``peer.drops``), not the host closing or the peer stopping."""
        with self.lock:
            if self.dead:
                return
            self.dead = True
            for s in self.streams.values():
                s.closed = True
            self.cv.notify_all()
        if injected:
            self.peer.drops.append(mode)
        if mode == "silent":  # keep the socket open and say nothing more (closed when the peer stops)
            return
        try:
            if mode == "rst":
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.sock.shutdown(socket.SHUT_RD)
            else:
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _protocol_error(self, what: str) -> None:
        self.peer.protocol_errors.append(what)
        self.kill("fin", injected=False)

    # -- reader loop
    def run(self) -> None:
        try:
            while not self.dead:
                hdr = self._recv_exact(HEADER.size)
                if hdr is None:
                    break
                command, arg0, arg1, length, crc, magic = HEADER.unpack(hdr)
                if command not in COMMAND_NAMES:
                    self._protocol_error(f"unknown command {hdr[:4]!r}")
                    break
                if magic != command ^ 0xFFFFFFFF:
                    self._protocol_error(f"{COMMAND_NAMES[command]}: bad magic {magic:#x}")
                    break
                if length > max(self.max_payload, 4096):
                    self._protocol_error(f"{COMMAND_NAMES[command]}: payload of {length} bytes exceeds "
                                         f"{self.max_payload}")
                    break
                data = self._recv_exact(length) if length else b""
                if data is None:
                    break
                if self.dead:
                    break
                if checksum(data) != crc and (self.host_version or 0) < A_VERSION:
                    self._protocol_error(f"{COMMAND_NAMES[command]}: bad checksum {crc} != {checksum(data)}")
                    break
                self.peer.packets_in[COMMAND_NAMES[command]] += 1
                with self.lock:
                    self._handle(command, arg0, arg1, data)
        except _ConnectionGone:
            pass
        except Exception as e:  # noqa: BLE001 - a bug in the peer must show up in the tests
            self.peer.errors.append(f"connection handler: {type(e).__name__}: {e}")
        finally:
            if not self.dead:
                self.kill("fin", injected=False)

    # -- dispatch (connection lock held)
    def _handle(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        peer, faults = self.peer, self.peer.faults
        if command == A_CNXN:
            self.host_version = arg0
            self.max_payload = max(4096, min(peer.max_payload, arg1))
            peer.host_banners.append(data.rstrip(b"\0").decode("utf-8", "replace"))
            if faults.garbage_on_connect:
                self.send_raw(faults.garbage)
                return
            self.online = False
            if not peer.require_auth:
                self._go_online()
            else:
                self._send_token()
            return
        if command == A_AUTH:
            if self.online or self.host_version is None:
                return
            if arg0 == AUTH_SIGNATURE:
                if self.token is None:
                    return
                for key in list(peer.trusted_keys):
                    if verify_token_signature(key, self.token, data):
                        peer.auth_events.append("signature-ok")
                        self._go_online()
                        return
                peer.auth_events.append("signature-bad")
                self._send_token()
            elif arg0 == AUTH_RSAPUBLICKEY:
                try:
                    key = parse_android_pubkey(data)
                except ValueError as e:
                    peer.auth_events.append(f"pubkey-invalid: {e}")
                    return
                peer.key_requests.append(data.split(b"\0", 1)[0].decode("ascii", "replace"))
                if peer.accept_new_keys and not faults.refuse_auth:
                    if all(k.public_numbers() != key.public_numbers() for k in peer.trusted_keys):
                        peer.trusted_keys.append(key)
                    peer.auth_events.append("pubkey-accepted")
                    self._go_online()
                else:
                    peer.auth_events.append("pubkey-refused")
            return
        if not self.online:  # adbd ignores everything else before the connection is authorized
            return
        if command == A_OPEN:
            self._open(arg0, data)
        elif command == A_OKAY:
            s = self.streams.get(arg1)
            if s is not None and s.remote_id == arg0:
                s.awaiting_okay = False
                s.pump()
                self.cv.notify_all()
        elif command == A_WRTE:
            s = self.streams.get(arg1)
            if s is None or s.remote_id != arg0:
                return
            self.send(A_OKAY, s.local_id, s.remote_id)
            if s.service == "sync:":
                s.sync_buf += data
                self._sync(s)
        elif command == A_CLSE:
            s = self.streams.get(arg1)
            if s is not None and (s.remote_id == arg0 or arg0 == 0):
                self.streams.pop(arg1, None)
                if not s.closed:
                    s.closed = True
                    self.send(A_CLSE, s.local_id, s.remote_id)
                self.cv.notify_all()

    def _send_token(self) -> None:
        self.token = secrets.token_bytes(TOKEN_SIZE)
        self.peer.auth_events.append("token")
        self.send(A_AUTH, AUTH_TOKEN, 0, self.token)

    def _go_online(self) -> None:
        self.online = True
        self.send(A_CNXN, A_VERSION, self.max_payload, self.peer.banner().encode())

    def _open(self, remote_id: int, data: bytes) -> None:
        peer, faults = self.peer, self.peer.faults
        dest = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        peer.opens.append(dest)
        local_id = self.next_id
        self.next_id += 1
        service, _, arg = dest.partition(":")
        if service in ("shell", "exec") and ":" in dest:
            peer.commands.append(arg)
            if faults.match(faults.garbage_on, arg):
                self.send_raw(faults.garbage)
                return
            s = _Stream(self, local_id, remote_id, dest)
            self.streams[local_id] = s
            self.send(A_OKAY, local_id, remote_id)
            if faults.match(faults.drop_on, arg):
                if not faults.drop_after_bytes:
                    self.kill(faults.drop_mode)
                    return
                s.drop_after = faults.drop_after_bytes
            stall = faults.stall_s if faults.match(faults.stall_on, arg) else 0.0
            threading.Thread(target=self._run_shell, args=(s, arg, stall), daemon=True,
                             name=f"adb-peer-shell-{local_id}").start()
        elif dest == "sync:":
            if faults.match(faults.garbage_on, dest):
                self.send_raw(faults.garbage)
                return
            s = _Stream(self, local_id, remote_id, dest)
            self.streams[local_id] = s
            self.send(A_OKAY, local_id, remote_id)
            if faults.match(faults.drop_on, dest):
                if not faults.drop_after_bytes:
                    self.kill(faults.drop_mode)
                    return
                s.drop_after = faults.drop_after_bytes
        elif dest == "root:":
            s = _Stream(self, local_id, remote_id, dest)
            self.streams[local_id] = s
            self.send(A_OKAY, local_id, remote_id)
            s.write("adbd is already running as root\n" if peer.rooted else
                    "adbd cannot run as root in production builds\n", block=False)
            s.finish()
        else:  # unknown service: adbd closes the stream it was asked to open
            self.send(A_CLSE, 0, remote_id)

    # -- shell
    def _run_shell(self, stream: _Stream, cmdline: str, stall: float) -> None:
        try:
            end = time.monotonic() + stall
            while time.monotonic() < end and stream.alive():
                time.sleep(min(0.05, max(0.0, end - time.monotonic())))
            if not stream.alive():
                return
            sh = Shell(self.peer, uid=self.uid, out=stream.write, err=stream.write, alive=stream.alive)
            sh.run(cmdline)
        except _ConnectionGone:
            return
        except Exception as e:  # noqa: BLE001
            self.peer.errors.append(f"shell {cmdline!r}: {type(e).__name__}: {e}")
            try:
                stream.write(f"adb_peer: internal error: {type(e).__name__}: {e}\n")
            except _ConnectionGone:
                return
        try:
            stream.finish()
        except _ConnectionGone:
            pass

    # -- sync (runs on the reader thread; replies are queued, never blocking)
    def _sync_reply(self, s: _Stream, data: bytes) -> None:
        s.write(data, block=False)

    def _sync_fail(self, s: _Stream, reason: str) -> None:
        msg = reason.encode()
        self._sync_reply(s, struct.pack("<2I", S_FAIL, len(msg)) + msg)

    def _sync(self, s: _Stream) -> None:
        fs, buf = self.peer.fs, s.sync_buf
        while len(buf) >= 8:
            sid, n = struct.unpack_from("<2I", buf)
            if s.sync_send is not None:
                if sid == S_DATA:
                    if n > SYNC_DATA_MAX:
                        self._sync_fail(s, "invalid data message: too large")
                        s.finish()
                        return
                    if len(buf) < 8 + n:
                        return
                    s.sync_send[2] += buf[8:8 + n]
                    del buf[:8 + n]
                    continue
                if sid == S_DONE:
                    del buf[:8]
                    path, mode, content = s.sync_send
                    s.sync_send = None
                    self._finish_push(s, path, mode, bytes(content), n)
                    continue
                self._sync_fail(s, "invalid data message: expected ID_DATA")
                s.finish()
                return
            if sid == S_QUIT:
                del buf[:8]
                s.finish()
                return
            if sid not in (S_STAT, S_LIST, S_SEND, S_RECV):
                self._sync_fail(s, "unknown command")
                s.finish()
                return
            if n > 1024:
                self._sync_fail(s, "path too long")
                s.finish()
                return
            if len(buf) < 8 + n:
                return
            arg = bytes(buf[8:8 + n]).decode("utf-8", "surrogateescape")
            del buf[:8 + n]
            if sid == S_STAT:
                mode, size, mtime = fs.sync_stat(arg)
                self._sync_reply(s, struct.pack("<4I", S_STAT, mode, size, mtime))
            elif sid == S_LIST:
                out = bytearray()
                try:
                    names = [".", ".."] + fs.listdir(arg, self.uid) if fs.lookup(arg) is not None and \
                        statmod.S_ISDIR(fs.lookup(arg).st_mode) else []
                except FsError:
                    names = []
                for name in names:
                    mode, size, mtime = fs.sync_stat(posixpath.join(arg, name))
                    raw = name.encode("utf-8", "surrogateescape")
                    out += struct.pack("<5I", S_DENT, mode, size, mtime, len(raw)) + raw
                out += struct.pack("<5I", S_DONE, 0, 0, 0, 0)
                self._sync_reply(s, bytes(out))
            elif sid == S_RECV:
                try:
                    content = fs.read(arg, self.uid)
                except FsError as e:
                    self._sync_fail(s, e.reason)
                    continue
                out = bytearray()
                for i in range(0, len(content), SYNC_DATA_MAX):
                    chunk = content[i:i + SYNC_DATA_MAX]
                    out += struct.pack("<2I", S_DATA, len(chunk)) + chunk
                out += struct.pack("<2I", S_DONE, 0)
                self._sync_reply(s, bytes(out))
            else:  # SEND "path,mode"
                path, comma, mode_s = arg.rpartition(",")
                if not comma:
                    path, mode_s = arg, "33188"
                try:
                    mode = int(mode_s)
                except ValueError:
                    mode = 0o100644
                s.sync_send = [path, mode, bytearray()]

    def _finish_push(self, s: _Stream, path: str, mode: int, content: bytes, mtime: int) -> None:
        fs, peer = self.peer.fs, self.peer
        if not path.startswith("/") or path.endswith("/"):
            reason = "Is a directory" if path.endswith("/") else "Invalid argument"
            self._sync_fail(s, f"couldn't create file: {reason}")
            return
        parent = posixpath.dirname(fs.norm(path))
        try:
            fs.mkdir(parent, self.uid, parents=True)
        except FsError as e:
            self._sync_fail(s, f"secure_mkdirs() failed: {e.reason}")
            return
        try:
            fs.write(path, content, self.uid, mode=mode & 0o7777 or 0o644)
        except FsError as e:
            self._sync_fail(s, f"couldn't create file: {e.reason}")
            return
        host = fs.host(path)
        if mtime:
            os.utime(host, (mtime, mtime))
        peer.pushed[fs.norm(path)] = host
        self._sync_reply(s, struct.pack("<2I", S_OKAY, 0))


# --------------------------------------------------------------------------------------------- the peer


class AdbPeer:
    """adbd on 127.0.0.1:<free port> serving ``fixture`` (default: the Pixel 4 fixture) from ``root``.

    ``rooted``: adbd runs as root (``id`` says uid=0, /sys is writable, ``su`` exists). ``su``: an ``su`` binary
    without adbd root (e.g. Magisk) when True. ``accept_new_keys``: the user taps *Allow* for unknown keys.
    ``require_auth=False`` is ``ro.adb.secure=0`` (no AUTH at all). ``trusted_keys``: keys (``cryptography`` RSA
    public keys or Android ``adbkey.pub`` texts) already allowed.
    """

    def __init__(self, root: Path | str | None = None, rooted: bool = False, accept_new_keys: bool = True, *,
                 su: bool | None = None, require_auth: bool = True, fixture: Path = FIXTURE_DIR,
                 max_payload: int = MAX_PAYLOAD, trusted_keys=()):
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="adb-peer-")) if root is None else Path(root)
        self.rooted = rooted
        self.su = rooted if su is None else su
        self.accept_new_keys = accept_new_keys
        self.require_auth = require_auth
        self.max_payload = max_payload
        self.fixture = Path(fixture)
        self.device = json.loads((self.fixture / "device.json").read_text())
        self.props: dict[str, str] = {}
        for line in (self.fixture / "getprop.txt").read_text().splitlines():
            m = re.match(r"^\[(.*?)\]: \[(.*)\]$", line)
            if m:
                self.props[m.group(1)] = m.group(2)
        if rooted:
            self.props.update({"service.adb.root": "1", "ro.debuggable": "1"})
        self.fs = DeviceFS(self.root, self.fixture)
        self.fs.on_write.append(self._sysfs_hook)
        self.faults = Faults()
        self.trusted_keys: list = []
        for k in trusted_keys:
            self.trusted_keys.append(parse_android_pubkey(k.encode() if isinstance(k, str) else k)
                                     if isinstance(k, (str, bytes)) else k)
        # what happened
        self.pushed: dict[str, Path] = {}
        self.commands: list[str] = []
        self.opens: list[str] = []
        self.tasksets: list[tuple[str, list[str]]] = []
        self.benchmarks: list[dict] = []
        self.auth_events: list[str] = []
        self.key_requests: list[str] = []
        self.host_banners: list[str] = []
        self.protocol_errors: list[str] = []
        self.errors: list[str] = []  # bugs in the peer itself (tests should assert this stays empty)
        self.drops: list[str] = []  # connections cut by a fault (their mode)
        self.connections = 0
        self.packets_in: collections.Counter = collections.Counter()
        self.host = "127.0.0.1"
        self.port = 0
        self._server: socket.socket | None = None
        self._conns: list[_Connection] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def serial(self) -> str:
        return f"{self.host}:{self.port}"

    def banner(self) -> str:
        props = ";".join(f"{p}={self.props.get(p, '')}" for p in self.device["banner_props"])
        return f"device::{props};features={','.join(self.device['features'])}"

    # -- lifecycle
    def start(self) -> "AdbPeer":
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.host, 0))
        srv.listen(16)
        self._server = srv
        self.port = srv.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name=f"adb-peer-{self.port}")
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stopping:
            try:
                sock, addr = self._server.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock, addr)
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=conn.run, daemon=True, name=f"adb-peer-conn-{self.connections}").start()

    def close(self) -> None:
        self._stopping = True
        if self._server is not None:
            try:  # shutdown wakes the accept() blocked in the accept thread (close alone does not, on Linux)
                self._server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._server.close()
        for conn in self._conns:
            if not conn.dead:
                conn.kill("fin", injected=False)
            else:
                try:  # "silent" drops left the socket open
                    conn.sock.close()
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "AdbPeer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def drop_connections(self, mode: str = "fin") -> None:
        """Cut every open connection now (the phone's Wi-Fi going away, adbd restarting)."""
        for conn in list(self._conns):
            conn.kill(mode)

    # -- the device's files, for tests
    def read_file(self, path: str) -> str:
        return self.fs.read(path, ROOT_UID).decode()

    def write_file(self, path: str, content: str | bytes, mode: int | None = None) -> None:
        """Change a device file as root (e.g. a thermal zone's temp), creating parents."""
        self.fs.mkdir(posixpath.dirname(self.fs.norm(path)), ROOT_UID, parents=True)
        self.fs.write(path, content.encode() if isinstance(content, str) else content, ROOT_UID, mode=mode)

    def _sysfs_hook(self, path: str) -> None:
        """The kernel's side of a governor change: performance/powersave pin the policy's clock."""
        m = re.match(r"^(/sys/devices/system/cpu/cpufreq/policy\d+)/scaling_governor$", path)
        if not m:
            return
        policy = m.group(1)
        gov = self.fs.host(path).read_text().strip()
        target = {"performance": "scaling_max_freq", "powersave": "scaling_min_freq"}.get(gov)
        if target is None:
            return
        freq = self.fs.host(f"{policy}/{target}").read_text()
        for f in ("scaling_cur_freq", "cpuinfo_cur_freq"):
            self.fs.host(f"{policy}/{f}").write_text(freq)


@pytest.fixture
def adb_peer(tmp_path):
    """A fresh Pixel 4 adbd on loopback (shell user, accepts new keys); its files under ``tmp_path/phone``."""
    with AdbPeer(tmp_path / "phone") as peer:
        yield peer
    assert not peer.errors, f"adb peer internal errors: {peer.errors}"


# --------------------------------------------------------------------------------------------- shell: lexer


class ShSyntaxError(Exception):
    pass


_RESERVED = {"for", "in", "do", "done", "if", "then", "elif", "else", "fi", "while", "until", "{", "}", "!"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _skip_dquote(src: str, j: int) -> int:
    """Index after the closing quote of a double-quoted string whose body starts at ``j``."""
    while j < len(src):
        c = src[j]
        if c == "\\":
            j += 2
        elif c == '"':
            return j + 1
        elif c == "$" and src.startswith("$(", j):
            j = _match_paren(src, j + 2) + 1
        elif c == "`":
            k = src.find("`", j + 1)
            if k < 0:
                raise ShSyntaxError("unterminated `")
            j = k + 1
        else:
            j += 1
    raise ShSyntaxError('unterminated "')


def _match_paren(src: str, j: int) -> int:
    """Index of the ``)`` closing a ``$(`` whose body starts at ``j``."""
    depth = 1
    while j < len(src):
        c = src[j]
        if c == "\\":
            j += 2
            continue
        if c == "'":
            k = src.find("'", j + 1)
            if k < 0:
                raise ShSyntaxError("unterminated '")
            j = k + 1
            continue
        if c == '"':
            j = _skip_dquote(src, j + 1)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    raise ShSyntaxError("unterminated $(")


class _Lexer:
    """Tokens: ("word", parts, raw) with parts (kind, text, quoted), kind lit/var/cmd; ("op", op);
    ("redir", fd, op) followed by the target word."""

    def __init__(self, src: str):
        self.src = src
        self.i = 0
        self.toks: list[tuple] = []
        self.parts: list | None = None
        self.start = 0

    def add(self, kind: str, text: str, quoted: bool, at: int) -> None:
        if self.parts is None:
            self.parts = []
            self.start = at
        if kind == "lit" and self.parts and self.parts[-1][0] == "lit" and self.parts[-1][2] == quoted:
            self.parts[-1] = ("lit", self.parts[-1][1] + text, quoted)
        else:
            self.parts.append((kind, text, quoted))

    def flush(self) -> None:
        if self.parts is not None:
            self.toks.append(("word", self.parts, self.src[self.start:self.i]))
            self.parts = None

    def dollar(self, quoted: bool, at: int) -> None:
        src, i = self.src, self.i
        nxt = src[i + 1:i + 2]
        if nxt == "(":
            j = _match_paren(src, i + 2)
            self.add("cmd", src[i + 2:j], quoted, at)
            self.i = j + 1
        elif nxt == "{":
            j = src.find("}", i + 2)
            if j < 0:
                raise ShSyntaxError("unterminated ${")
            self.add("var", src[i + 2:j], quoted, at)
            self.i = j + 1
        elif nxt and nxt in "?$#!@*0123456789-":
            self.add("var", nxt, quoted, at)
            self.i = i + 2
        else:
            m = _NAME.match(src, i + 1)
            if m:
                self.add("var", m.group(0), quoted, at)
                self.i = m.end()
            else:
                self.add("lit", "$", quoted, at)
                self.i = i + 1

    def backquote(self, quoted: bool, at: int) -> None:
        j = self.src.find("`", self.i + 1)
        if j < 0:
            raise ShSyntaxError("unterminated `")
        self.add("cmd", self.src[self.i + 1:j].replace("\\`", "`"), quoted, at)
        self.i = j + 1

    def run(self) -> list[tuple]:
        src = self.src
        while self.i < len(src):
            at, c = self.i, src[self.i]
            if c in " \t\r":
                self.flush()
                self.i += 1
            elif c == "\n":
                self.flush()
                self.toks.append(("op", "\n"))
                self.i += 1
            elif c == "#" and self.parts is None:
                while self.i < len(src) and src[self.i] != "\n":
                    self.i += 1
            elif c in ";&|()":
                self.flush()
                two = src[self.i:self.i + 2]
                op = two if two in ("&&", "||", ";;") else c
                self.toks.append(("op", op))
                self.i += len(op)
            elif c in "<>":
                fd = None
                raw = src[self.start:self.i] if self.parts is not None else ""
                if raw.isdigit() and all(p[0] == "lit" and not p[2] for p in self.parts or []):
                    fd, self.parts = int(raw), None
                else:
                    self.flush()
                self.i += 1
                op = c
                if c == ">" and src[self.i:self.i + 1] == ">":
                    op, self.i = ">>", self.i + 1
                elif src[self.i:self.i + 1] == "&":
                    op, self.i = c + "&", self.i + 1
                elif c == ">" and src[self.i:self.i + 1] == "|":
                    self.i += 1
                self.toks.append(("redir", fd if fd is not None else (1 if c == ">" else 0), op))
            elif c == "'":
                j = src.find("'", self.i + 1)
                if j < 0:
                    raise ShSyntaxError("unterminated '")
                self.add("lit", src[self.i + 1:j], True, at)
                self.i = j + 1
            elif c == '"':
                self.i += 1
                buf = ""
                self.add("lit", "", True, at)
                while True:
                    if self.i >= len(src):
                        raise ShSyntaxError('unterminated "')
                    d = src[self.i]
                    if d == '"':
                        self.i += 1
                        break
                    if d == "\\" and src[self.i + 1:self.i + 2] in ('$', '`', '"', '\\', '\n'):
                        buf += src[self.i + 1] if src[self.i + 1] != "\n" else ""
                        self.i += 2
                    elif d == "$" or d == "`":
                        if buf:
                            self.add("lit", buf, True, at)
                            buf = ""
                        self.dollar(True, at) if d == "$" else self.backquote(True, at)
                    else:
                        buf += d
                        self.i += 1
                if buf:
                    self.add("lit", buf, True, at)
            elif c == "\\":
                nxt = src[self.i + 1:self.i + 2]
                if nxt != "\n":
                    self.add("lit", nxt, True, at)
                self.i += 2
            elif c == "$":
                self.dollar(False, at)
            elif c == "`":
                self.backquote(False, at)
            else:
                self.add("lit", c, False, at)
                self.i += 1
        self.flush()
        return self.toks


# --------------------------------------------------------------------------------------------- shell: parser


class _Parser:
    def __init__(self, toks: list[tuple]):
        self.toks = toks
        self.k = 0

    def peek(self):
        return self.toks[self.k] if self.k < len(self.toks) else None

    def advance(self):
        t = self.toks[self.k]
        self.k += 1
        return t

    @staticmethod
    def reserved(t, words) -> bool:
        return (t is not None and t[0] == "word" and t[2] in words and len(t[1]) == 1 and t[1][0][0] == "lit"
                and not t[1][0][2])

    @staticmethod
    def describe(t) -> str:
        if t is None:
            return "unexpected EOF"
        if t[0] == "word":
            return f"'{t[2]}' unexpected"
        if t[0] == "op":
            return f"'{t[1] if t[1] != chr(10) else 'newline'}' unexpected"
        return f"'{t[2]}' unexpected"

    def is_op(self, *ops) -> bool:
        t = self.peek()
        return t is not None and t[0] == "op" and t[1] in ops

    def skip(self, *ops) -> None:
        while self.is_op(*ops):
            self.k += 1

    def expect(self, word: str) -> None:
        if not self.reserved(self.peek(), {word}):
            raise ShSyntaxError(self.describe(self.peek()))
        self.k += 1

    def program(self) -> list:
        items = self.parse_list(set())
        if self.peek() is not None:
            raise ShSyntaxError(self.describe(self.peek()))
        return items

    def parse_list(self, stop: set[str]) -> list:
        items = []
        while True:
            self.skip(";", "\n", "&")
            t = self.peek()
            if t is None or self.reserved(t, stop) or self.is_op(")"):
                return items
            items.append(self.and_or())
            t = self.peek()
            if t is None or self.is_op(")") or self.reserved(t, stop):
                return items
            if not self.is_op(";", "\n", "&"):
                raise ShSyntaxError(self.describe(t))

    def and_or(self):
        first = self.pipeline()
        rest = []
        while self.is_op("&&", "||"):
            op = self.advance()[1]
            self.skip("\n")
            rest.append((op, self.pipeline()))
        return ("andor", first, rest)

    def pipeline(self):
        neg = False
        if self.reserved(self.peek(), {"!"}):
            self.k += 1
            neg = True
        cmds = [self.command()]
        while self.is_op("|"):
            self.k += 1
            self.skip("\n")
            cmds.append(self.command())
        return ("pipe", cmds, neg)

    def redirs(self) -> list:
        out = []
        while self.peek() is not None and self.peek()[0] == "redir":
            _, fd, op = self.advance()
            t = self.peek()
            if t is None or t[0] != "word":
                raise ShSyntaxError(self.describe(t))
            self.k += 1
            out.append((fd, op, t[1]))
        return out

    def command(self):
        t = self.peek()
        if t is None:
            raise ShSyntaxError("unexpected EOF")
        if self.reserved(t, {"for"}):
            self.k += 1
            name = self.peek()
            if name is None or name[0] != "word" or not _NAME.fullmatch(name[2]):
                raise ShSyntaxError(self.describe(name))
            self.k += 1
            self.skip("\n")
            words = None
            if self.reserved(self.peek(), {"in"}):
                self.k += 1
                words = []
                while self.peek() is not None and self.peek()[0] == "word":
                    words.append(self.advance()[1])
            self.skip(";", "\n")
            self.expect("do")
            body = self.parse_list({"done"})
            self.expect("done")
            return ("cmd", "for", (name[2], words, body), self.redirs())
        if self.reserved(t, {"if"}):
            self.k += 1
            branches = []
            cond = self.parse_list({"then"})
            self.expect("then")
            branches.append((cond, self.parse_list({"elif", "else", "fi"})))
            other = None
            while True:
                if self.reserved(self.peek(), {"elif"}):
                    self.k += 1
                    c = self.parse_list({"then"})
                    self.expect("then")
                    branches.append((c, self.parse_list({"elif", "else", "fi"})))
                elif self.reserved(self.peek(), {"else"}):
                    self.k += 1
                    other = self.parse_list({"fi"})
                else:
                    break
            self.expect("fi")
            return ("cmd", "if", (branches, other), self.redirs())
        if self.reserved(t, {"while", "until"}):
            self.k += 1
            cond = self.parse_list({"do"})
            self.expect("do")
            body = self.parse_list({"done"})
            self.expect("done")
            return ("cmd", "while", (cond, body, t[2] == "until"), self.redirs())
        if self.reserved(t, {"{"}):
            self.k += 1
            body = self.parse_list({"}"})
            self.expect("}")
            return ("cmd", "group", body, self.redirs())
        if self.is_op("("):
            self.k += 1
            body = self.parse_list(set())
            if not self.is_op(")"):
                raise ShSyntaxError(self.describe(self.peek()))
            self.k += 1
            return ("cmd", "subshell", body, self.redirs())
        if t[0] == "op" or self.reserved(t, _RESERVED - {"{", "!"}):
            raise ShSyntaxError(self.describe(t))
        words, redirs = [], []
        while True:
            t = self.peek()
            if t is None:
                break
            if t[0] == "word":
                words.append(t)
                self.k += 1
            elif t[0] == "redir":
                redirs += self.redirs()
            else:
                break
        return ("cmd", "simple", words, redirs)


def parse_shell(src: str) -> list:
    return _Parser(_Lexer(src).run()).program()


# --------------------------------------------------------------------------------------------- shell: execution


@dataclasses.dataclass
class _IO:
    """Where a command's stdout and stderr go (callables taking bytes or str) and its stdin."""

    out: Callable[[bytes], None]
    err: Callable[[bytes], None]
    stdin: bytes = b""

    def __post_init__(self):
        self.out, self.err = _text_ok(self.out), _text_ok(self.err)


def _text_ok(fn):
    if getattr(fn, "_text_ok", False):
        return fn

    def w(data):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if data:
            fn(data)
    w._text_ok = True
    return w


def _discard(_data: bytes) -> None:
    pass


SIGNAL_TEXT = {4: "Illegal instruction", 6: "Aborted", 7: "Bus error", 8: "Floating point exception", 9: "Killed",
               11: "Segmentation fault", 15: "Terminated"}


class Shell:
    """One ``/system/bin/sh -c <cmd>`` as adbd starts for ``shell:<cmd>``."""

    def __init__(self, peer: AdbPeer, uid: int, out, err, alive: Callable[[], bool] = lambda: True,
                 vars: dict[str, str] | None = None, cwd: str = "/", args: list[str] | None = None):
        self.peer = peer
        self.fs = peer.fs
        self.uid = uid
        self.io = _IO(out, err)
        self.alive = alive
        self.vars = dict(vars) if vars is not None else {
            "PATH": peer.device.get("path", "/system/bin"), "HOME": "/", "SHELL": SH, "TMPDIR": "/data/local/tmp",
            "HOSTNAME": peer.props.get("ro.product.device", "localhost"), "USER": "root" if uid == 0 else "shell",
            "ANDROID_DATA": "/data", "ANDROID_ROOT": "/system", "EXTERNAL_STORAGE": "/sdcard"}
        self.cwd = cwd
        self.args = list(args or [])
        self.status = 0
        self.pid = 20000 + secrets.randbelow(10000)
        self.affinity = 0xFF

    def child(self, io: _IO, uid: int | None = None, share_vars: bool = False, args=None) -> "Shell":
        sh = Shell(self.peer, self.uid if uid is None else uid, io.out, io.err, self.alive,
                   vars=self.vars, cwd=self.cwd, args=self.args if args is None else args)
        if share_vars:
            sh.vars = self.vars
        sh.affinity = self.affinity
        sh.status = self.status
        return sh

    def check(self) -> None:
        if not self.alive():
            raise _ConnectionGone()

    # -- entry
    def run(self, src: str, io: _IO | None = None) -> int:
        io = io or self.io
        try:
            tree = parse_shell(src)
        except ShSyntaxError as e:
            io.err(f"{SH}: syntax error: {e}\n")
            self.status = 1
            return 1
        try:
            self.status = self.exec_list(tree, io)
        except _Exit as e:
            self.status = e.status
        return self.status

    # -- tree walking
    def exec_list(self, items: list, io: _IO) -> int:
        for item in items:
            self.check()
            _, first, rest = item
            status = self.exec_pipe(first, io)
            for op, p in rest:
                if (op == "&&") == (status == 0):
                    status = self.exec_pipe(p, io)
            self.status = status
        return self.status

    def exec_pipe(self, node, io: _IO) -> int:
        _, cmds, neg = node
        data = io.stdin
        status = 0
        for i, c in enumerate(cmds):
            if i == len(cmds) - 1:
                status = self.exec_cmd(c, _IO(io.out, io.err, data))
            else:
                buf = bytearray()
                self.exec_cmd(c, _IO(buf.extend, io.err, data))
                data = bytes(buf)
        status = (0 if status else 1) if neg else status
        self.status = status
        return status

    def redirect(self, redirs: list, io: _IO) -> _IO:
        out, err, stdin = io.out, io.err, io.stdin
        for fd, op, target in redirs:
            word = " ".join(self.expand(target, io))
            if op in (">&", "<&"):
                src = {1: out, 2: err}
                if word == "-":
                    new = _discard
                elif word.isdigit() and int(word) in src:
                    new = src[int(word)]
                elif word.isdigit():
                    raise FsError(word, "Bad file descriptor")
                else:  # ">& file" means both to the file
                    new = self._file_writer(word, False)
                    out = new
                if fd == 1:
                    out = new
                elif fd == 2:
                    err = new
            elif op == "<":
                stdin = self.fs.read(self.fs.norm(word, self.cwd), self.uid)
            else:
                new = _discard if word == "/dev/null" else self._file_writer(word, op == ">>")
                if fd == 1:
                    out = new
                elif fd == 2:
                    err = new
        return _IO(out, err, stdin)

    def _file_writer(self, path: str, append: bool):
        p = self.fs.norm(path, self.cwd)
        if not append:
            self.fs.write(p, b"", self.uid)

        def w(data: bytes) -> None:
            self.fs.write(p, data, self.uid, append=True)
        return w

    def exec_cmd(self, node, io: _IO) -> int:
        _, kind, payload, redirs = node
        try:
            io2 = self.redirect(redirs, io) if redirs else io
        except FsError as e:
            verb = "open" if any(op == "<" for _, op, _ in redirs) else "create"
            io.err(f"{SH}: can't {verb} {e.path}: {e.reason}\n")
            self.status = 1
            return 1
        if kind == "simple":
            status = self.exec_simple(payload, io2)
        elif kind == "for":
            name, words, body = payload
            items = self.args if words is None else [w for word in words for w in self.expand(word, io2)]
            status = 0
            for item in items:
                self.vars[name] = item
                status = self.exec_list(body, io2)
        elif kind == "if":
            branches, other = payload
            status = 0
            for cond, body in branches:
                if self.exec_list(cond, io2) == 0:
                    status = self.exec_list(body, io2)
                    break
            else:
                if other is not None:
                    status = self.exec_list(other, io2)
        elif kind == "while":
            cond, body, until = payload
            status = 0
            for _ in range(100000):
                self.check()
                if (self.exec_list(cond, io2) == 0) == until:
                    break
                status = self.exec_list(body, io2)
        elif kind == "group":
            status = self.exec_list(payload, io2)
        else:  # subshell
            sub = self.child(io2)
            try:
                status = sub.exec_list(payload, io2)
            except _Exit as e:
                status = e.status
        self.status = status
        return status

    def exec_simple(self, words: list, io: _IO) -> int:
        argv: list[str] = []
        assigns: list[tuple[str, str]] = []
        self._subst_status = None
        for _, parts, raw in words:
            first = parts[0]
            if not argv and first[0] == "lit" and not first[2] and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", first[1]):
                name, _, rest = first[1].partition("=")
                value = "".join(self.expand([("lit", rest, True)] + [(k, t, True) for k, t, _ in parts[1:]], io))
                assigns.append((name, value))
            else:
                argv += self.expand(parts, io)
        for name, value in assigns:
            self.vars[name] = value
        if not argv:
            return self._subst_status if self._subst_status is not None else 0
        return self.run_argv(argv, io)

    # -- expansion
    def var(self, name: str) -> str:
        default = None
        for sep in (":-", "-"):
            if sep in name:
                name, _, default = name.partition(sep)
                break
        if name == "?":
            v = str(self.status)
        elif name == "$":
            v = str(self.pid)
        elif name == "#":
            v = str(len(self.args))
        elif name == "0":
            v = SH
        elif name.isdigit():
            i = int(name)
            v = self.args[i - 1] if 0 < i <= len(self.args) else ""
        elif name in ("@", "*"):
            v = " ".join(self.args)
        elif name in ("!", "-"):
            v = ""
        else:
            v = self.vars.get(name, "")
        return default if default is not None and v == "" else v

    def subst(self, src: str, io: _IO) -> str:
        buf = bytearray()
        sub = self.child(_IO(buf.extend, io.err))
        sub.run(src, _IO(buf.extend, io.err))
        self._subst_status = sub.status
        return buf.decode("utf-8", "surrogateescape").rstrip("\n")

    def expand(self, parts: list, io: _IO) -> list[str]:
        fields: list[list[tuple[str, bool]]] = [[]]
        keep = [False]

        def new_field():
            if fields[-1] or keep[-1]:
                fields.append([])
                keep.append(False)

        for kind, text, quoted in parts:
            if kind == "lit":
                fields[-1].append((text, quoted))
                keep[-1] = keep[-1] or quoted
                continue
            value = self.var(text) if kind == "var" else self.subst(text, io)
            if quoted:
                fields[-1].append((value, True))
                keep[-1] = True
                continue
            chunks = value.split()
            if not chunks:
                if value:
                    new_field()
                continue
            if value[0].isspace():
                new_field()
            fields[-1].append((chunks[0], False))
            for c in chunks[1:]:
                new_field()
                fields[-1].append((c, False))
            if value[-1].isspace():
                new_field()
        out = []
        for f, k in zip(fields, keep):
            if not f and not k:
                continue
            text = "".join(t for t, _ in f)
            if any(not q and any(ch in t for ch in "*?[") for t, q in f):
                pattern = "".join(t if not q else re.sub(r"([*?\[])", r"[\1]", t) for t, q in f)
                hits = self.fs.glob(pattern, self.cwd)
                if hits:
                    out += hits
                    continue
            out.append(text)
        return out

    # -- commands
    def run_argv(self, argv: list[str], io: _IO, via: str | None = None) -> int:
        self.check()
        name = argv[0]
        if "/" in name:
            return self.exec_path(name, argv, io, via)
        fn = BUILTINS.get(name)
        if fn is not None and not (name == "su" and not self.peer.su):
            return fn(self, argv, io)
        for d in self.vars.get("PATH", "").split(":"):
            if d and self.fs.lookup(posixpath.join(d, name)) is not None:
                return self.exec_path(posixpath.join(d, name), argv, io, via)
        if via:
            io.err(f"{via}: exec {name}: No such file or directory\n")
        else:
            io.err(f"{SH}: {name}: inaccessible or not found\n")
        return 127

    def exec_path(self, path: str, argv: list[str], io: _IO, via: str | None = None) -> int:
        p = self.fs.norm(path, self.cwd)
        st = self.fs.lookup(p)

        def fail(shell_reason: str, errno_text: str, code: int) -> int:
            io.err(f"{via}: exec {path}: {errno_text}\n" if via else f"{SH}: {path}: {shell_reason}\n")
            return code

        if st is None:
            return fail("inaccessible or not found", "No such file or directory", 127)
        if statmod.S_ISDIR(st.st_mode):
            return fail("can't execute: Is a directory", "Permission denied", 126)
        if not self.fs.can(p, self.uid, "x"):
            return fail("can't execute: Permission denied", "Permission denied", 126)
        if posixpath.basename(p) == "benchmark_model":
            return run_benchmark_model(self, path, argv, io)
        content = self.fs.host(p).read_bytes()
        if content[:4] == b"\x7fELF":
            bits = 64 if content[4:5] == b"\x02" else 32
            machine = struct.unpack_from("<H", content, 18)[0] if len(content) >= 20 else 0
            if machine in (40, 183):  # ARM / AArch64: would run on the phone; the peer cannot
                io.err(f"adb_peer: cannot run ARM binaries ({path}); only benchmark_model is emulated\n")
                return 126
            return fail(f"not executable: {bits}-bit ELF file", "Exec format error", 126)
        text = content.decode("utf-8", "replace")
        if text.startswith("#!"):
            text = text.split("\n", 1)[1] if "\n" in text else ""
        sub = self.child(io, args=argv[1:])
        return sub.run(text, io)


# --------------------------------------------------------------------------------------------- commands


def _usage(io: _IO, tool: str, msg: str, code: int = 1) -> int:
    io.err(f"{tool}: {msg}\n")
    return code


def _c_echo(sh: Shell, argv, io):
    args, newline, escapes = argv[1:], True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        newline = newline and "n" not in args[0]
        escapes = "e" in args[0] or (escapes and "E" not in args[0])
        args = args[1:]
    text = " ".join(args)
    if escapes:
        text = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    io.out(text + ("\n" if newline else ""))
    return 0


def _c_printf(sh: Shell, argv, io):
    if len(argv) < 2:
        return _usage(io, "printf", "Needs 1 argument")
    fmt = argv[1].encode("latin-1", "backslashreplace").decode("unicode_escape")
    args = argv[2:]
    out = []
    while True:
        used = 0

        def repl(m):
            nonlocal used
            if m.group(0) == "%%":
                return "%"
            v = args[used] if used < len(args) else ""
            used += 1
            if m.group(2) in "di":
                try:
                    v = int(v or 0)
                except ValueError:
                    v = 0
            return ("%" + m.group(1) + m.group(2)) % v
        out.append(re.sub(r"%%|%([-0-9.]*)([sdi])", repl, fmt))
        args = args[used:]
        if not args or not used:
            break
    io.out("".join(out))
    return 0


def _c_getprop(sh: Shell, argv, io):
    props = sh.peer.props
    if len(argv) == 1:
        io.out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
    else:
        io.out(props.get(argv[1], argv[2] if len(argv) > 2 else "") + "\n")
    return 0


def _c_setprop(sh: Shell, argv, io):
    if len(argv) != 3:
        return _usage(io, "setprop", "Need 2 arguments")
    if sh.uid != ROOT_UID and not argv[1].startswith(("debug.", "log.tag")) or argv[1].startswith("ro.") and \
            argv[1] in sh.peer.props:
        io.err(f"Failed to set property '{argv[1]}' to '{argv[2]}'.\nSee dmesg for error reason.\n")
        return 1
    sh.peer.props[argv[1]] = argv[2]
    return 0


def _c_cat(sh: Shell, argv, io):
    paths = [a for a in argv[1:] if a != "-u"]
    if not paths:
        io.out(io.stdin)
        return 0
    status = 0
    for p in paths:
        if p == "-":
            io.out(io.stdin)
            continue
        try:
            io.out(sh.fs.read(sh.fs.norm(p, sh.cwd), sh.uid))
        except FsError as e:
            io.err(f"cat: {p}: {e.reason}\n")
            status = 1
    return status


def _c_id(sh: Shell, argv, io):
    dev = sh.peer.device
    root = sh.uid == ROOT_UID
    if "-u" in argv or "-un" in argv or "-nu" in argv:
        io.out(("root" if root else "shell") if any("n" in a for a in argv[1:]) else ("0" if root else "2000"))
        io.out("\n")
        return 0
    io.out((dev.get("id_root") if root else dev.get("id_shell")) + "\n")
    return 0


def _c_whoami(sh: Shell, argv, io):
    io.out("root\n" if sh.uid == ROOT_UID else "shell\n")
    return 0


def _c_mkdir(sh: Shell, argv, io):
    parents, mode, paths, args = False, 0o775 if sh.uid else 0o755, [], argv[1:]
    while args:
        a = args.pop(0)
        if a == "-p":
            parents = True
        elif a == "-m" and args:
            mode = int(args.pop(0), 8)
        else:
            paths.append(a)
    if not paths:
        return _usage(io, "mkdir", "Needs 1 argument")
    status = 0
    for p in paths:
        try:
            sh.fs.mkdir(sh.fs.norm(p, sh.cwd), sh.uid, parents, mode)
        except FsError as e:
            io.err(f"mkdir: '{p}': {e.reason}\n")
            status = 1
    return status


def _parse_mode(spec: str, old: int) -> int | None:
    if re.fullmatch(r"[0-7]{1,4}", spec):
        return int(spec, 8)
    mode = old
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwx]*)", clause)
        if not m:
            return None
        who = m.group(1) or "a"
        bits = sum({"r": 4, "w": 2, "x": 1}[c] for c in m.group(3))
        mask = sum({"u": bits << 6, "g": bits << 3, "o": bits}[w] for w in ("ugo" if "a" in who else who))
        if m.group(2) == "+":
            mode |= mask
        elif m.group(2) == "-":
            mode &= ~mask
        else:
            span = sum({"u": 0o700, "g": 0o70, "o": 0o7}[w] for w in ("ugo" if "a" in who else who))
            mode = (mode & ~span) | mask
    return mode


def _c_chmod(sh: Shell, argv, io):
    args = [a for a in argv[1:] if a not in ("-R", "-f")]
    if len(args) < 2:
        return _usage(io, "chmod", "Needs 2 arguments")
    status = 0
    for p in args[1:]:
        path = sh.fs.norm(p, sh.cwd)
        mode = _parse_mode(args[0], sh.fs.mode_uid(path)[0])
        if mode is None:
            return _usage(io, "chmod", f"bad mode '{args[0]}'")
        try:
            sh.fs.chmod(path, mode, sh.uid)
        except FsError as e:
            io.err(f"chmod: '{p}': {e.reason}\n")
            status = 1
    return status


def _c_rm(sh: Shell, argv, io):
    force = recursive = False
    paths = []
    for a in argv[1:]:
        if re.fullmatch(r"-[rRfvi]+", a):
            force = force or "f" in a
            recursive = recursive or "r" in a.lower()
        else:
            paths.append(a)
    if not paths and not force:
        return _usage(io, "rm", "Needs 1 argument")
    status = 0
    for p in paths:
        try:
            sh.fs.remove(sh.fs.norm(p, sh.cwd), sh.uid, recursive)
        except FsError as e:
            if force and e.reason == "No such file or directory":
                continue
            io.err(f"rm: {p}: {e.reason}\n")
            status = 1
    return status


def _c_touch(sh: Shell, argv, io):
    status = 0
    for p in argv[1:]:
        if p.startswith("-"):
            continue
        path = sh.fs.norm(p, sh.cwd)
        try:
            if sh.fs.lookup(path) is None:
                sh.fs.write(path, b"", sh.uid)
            else:
                os.utime(sh.fs.host(path))
        except FsError as e:
            io.err(f"touch: '{p}': {e.reason}\n")
            status = 1
    return status


def _mode_string(mode: int) -> str:
    kind = "d" if statmod.S_ISDIR(mode) else "l" if statmod.S_ISLNK(mode) else "-"
    return kind + "".join(c if mode & (1 << (8 - i)) else "-" for i, c in enumerate("rwxrwxrwx"))


def _c_ls(sh: Shell, argv, io):
    flags = "".join(a[1:] for a in argv[1:] if a.startswith("-") and len(a) > 1)
    paths = [a for a in argv[1:] if not (a.startswith("-") and len(a) > 1)] or ["."]
    status = 0
    fs = sh.fs

    def line(dev_path: str, shown: str) -> str:
        if "l" not in flags:
            return shown
        mode, size, mtime = fs.sync_stat(dev_path)
        perm, owner = fs.mode_uid(dev_path)
        who = "root" if owner == ROOT_UID else "shell" if owner == SHELL_UID else "system"
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime))
        mode = (mode & ~0o7777) | (perm if not statmod.S_ISLNK(mode) else 0o777)
        target = f" -> {os.readlink(fs.host(dev_path))}" if statmod.S_ISLNK(mode) else ""
        return f"{_mode_string(mode)} 1 {who} {who} {size:>8} {stamp} {shown}{target}"

    for p in paths:
        path = fs.norm(p, sh.cwd)
        st = fs.lookup(path, follow=False)
        if st is None:
            io.err(f"ls: {p}: No such file or directory\n")
            status = 1
            continue
        if statmod.S_ISDIR(fs.lookup(path).st_mode) and not (statmod.S_ISLNK(st.st_mode) and "l" in flags) \
                and "d" not in flags:
            try:
                names = fs.listdir(path, sh.uid)
            except FsError as e:
                io.err(f"ls: {p}: {e.reason}\n")
                status = 1
                continue
            if "a" in flags:
                names = [".", ".."] + names
            if len(paths) > 1:
                io.out(f"{p}:\n")
            if "l" in flags:
                io.out(f"total {len(names) * 4}\n")
            io.out("".join(line(posixpath.join(path, n), n) + "\n" for n in names if "a" in flags
                           or not n.startswith(".")))
        else:
            io.out(line(path, p) + "\n")
    return status


def _c_uname(sh: Shell, argv, io):
    u = sh.peer.device["uname"]
    flags = "".join(a[1:] for a in argv[1:] if a.startswith("-")) or "s"
    if "a" in flags:
        flags = "snrvmo"
    io.out(" ".join(u[f] for f in "snrvmo" if f in flags) + "\n")
    return 0


def _c_su(sh: Shell, argv, io):
    args = argv[1:]
    while args and args[0] in ("-", "-l", "--login", "-M", "-mm", "--mount-master"):
        args = args[1:]
    if args and args[0] in ("0", "root"):
        args = args[1:]
    if args and args[0] in ("-c", "--command"):
        if len(args) < 2:
            return _usage(io, "su", "option requires an argument -- c")
        return sh.child(io, uid=ROOT_UID).run(" ".join(args[1:]), io)
    if not args:
        return 0  # an interactive root shell with no input: exits at once
    return sh.child(io, uid=ROOT_UID).run_argv(args, io)


def _c_taskset(sh: Shell, argv, io):
    args = argv[1:]
    if args and args[0] == "-p":
        if len(args) == 2:
            io.out(f"pid {args[1]}'s affinity mask: {sh.affinity:x}\n")
            return 0
        args = args[1:]
        if len(args) != 2:
            return _usage(io, "taskset", "Needs 2 arguments")
    if len(args) < 2:
        return _usage(io, "taskset", "Needs 2 arguments")
    try:
        mask = int(args[0].lower().removeprefix("0x"), 16)
    except ValueError:
        return _usage(io, "taskset", f"bad mask '{args[0]}'")
    ncpu = int(sh.fs.host("/sys/devices/system/cpu/kernel_max").read_text().strip() or 7) + 1 \
        if sh.fs.lookup("/sys/devices/system/cpu/kernel_max") else 8
    if mask & ((1 << ncpu) - 1) == 0:
        return _usage(io, "taskset", "sched_setaffinity: Invalid argument")
    sh.peer.tasksets.append((args[0], list(args[1:])))
    if argv[1] == "-p":
        return 0
    child = sh.child(io)
    child.affinity = mask & ((1 << ncpu) - 1)
    return child.run_argv(args[1:], io, via="taskset")


def _c_sh(sh: Shell, argv, io):
    args = argv[1:]
    if args and args[0] == "-c":
        if len(args) < 2:
            return _usage(io, SH, "-c: option requires an argument")
        return sh.child(io, args=args[2:]).run(args[1], io)
    if args:
        try:
            text = sh.fs.read(sh.fs.norm(args[0], sh.cwd), sh.uid).decode("utf-8", "replace")
        except FsError as e:
            io.err(f"{SH}: {args[0]}: {e.reason}\n")
            return 127
        return sh.child(io, args=args[1:]).run(text, io)
    return sh.child(io).run(io.stdin.decode("utf-8", "replace"), io)


def _test(sh: Shell, args: list[str]) -> bool:
    if not args:
        return False
    if args[0] == "!":
        return not _test(sh, args[1:])
    if len(args) == 1:
        return args[0] != ""
    if len(args) == 2:
        op, a = args
        if op == "-z":
            return a == ""
        if op == "-n":
            return a != ""
        path = sh.fs.norm(a, sh.cwd)
        st = sh.fs.lookup(path)
        if op == "-e":
            return st is not None
        if op == "-f":
            return st is not None and statmod.S_ISREG(st.st_mode)
        if op == "-d":
            return st is not None and statmod.S_ISDIR(st.st_mode)
        if op == "-s":
            return st is not None and st.st_size > 0
        if op == "-L" or op == "-h":
            return sh.fs.lookup(path, follow=False) is not None and sh.fs.host(path).is_symlink()
        if op in ("-r", "-w", "-x"):
            return st is not None and sh.fs.can(path, sh.uid, op[1])
        return False
    if len(args) == 3:
        a, op, b = args
        if op == "=" or op == "==":
            return a == b
        if op == "!=":
            return a != b
        try:
            x, y = int(a), int(b)
        except ValueError:
            return False
        return {"-eq": x == y, "-ne": x != y, "-gt": x > y, "-lt": x < y, "-ge": x >= y, "-le": x <= y}.get(op, False)
    if "-a" in args:
        i = args.index("-a")
        return _test(sh, args[:i]) and _test(sh, args[i + 1:])
    if "-o" in args:
        i = args.index("-o")
        return _test(sh, args[:i]) or _test(sh, args[i + 1:])
    return False


def _c_test(sh: Shell, argv, io):
    args = argv[1:]
    if argv[0] == "[":
        if not args or args[-1] != "]":
            return _usage(io, "[", "missing ]", 2)
        args = args[:-1]
    return 0 if _test(sh, args) else 1


def _c_exit(sh: Shell, argv, io):
    raise _Exit(int(argv[1]) & 0xFF if len(argv) > 1 and argv[1].lstrip("-").isdigit() else sh.status)


def _c_sleep(sh: Shell, argv, io):
    try:
        secs = float(argv[1]) if len(argv) > 1 else None
    except ValueError:
        secs = None
    if secs is None:
        return _usage(io, "sleep", "Needs 1 argument" if len(argv) < 2 else f"bad number '{argv[1]}'")
    end = time.monotonic() + secs
    while time.monotonic() < end:
        sh.check()
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
    return 0


def _c_cd(sh: Shell, argv, io):
    path = sh.fs.norm(argv[1] if len(argv) > 1 else "/", sh.cwd)
    st = sh.fs.lookup(path)
    if st is None or not statmod.S_ISDIR(st.st_mode):
        io.err(f"{SH}: cd: /{path.lstrip('/')} - No such file or directory\n")
        return 2
    sh.cwd = path
    return 0


def _c_export(sh: Shell, argv, io):
    for a in argv[1:]:
        if "=" in a:
            k, _, v = a.partition("=")
            sh.vars[k] = v
    return 0


def _c_which(sh: Shell, argv, io):
    status = 0
    names = [a for a in argv[1:] if a != "-v"]
    for name in names:
        found = None
        for d in sh.vars.get("PATH", "").split(":"):
            if sh.fs.lookup(posixpath.join(d, name)) is not None:
                found = posixpath.join(d, name)
                break
        if found is None and name in BUILTINS and name not in ("su", "[", "cd", "exit", "export", "command"):
            found = f"/system/bin/{name}"
        if found is None and name == "su" and sh.peer.su:
            found = "/system/xbin/su"
        if found:
            io.out(found + "\n")
        else:
            status = 1
    return status


def _c_command(sh: Shell, argv, io):
    if len(argv) > 2 and argv[1] in ("-v", "-V"):
        return _c_which(sh, argv[1:], io)
    return sh.run_argv(argv[1:], io) if len(argv) > 1 else 0


def _lines_of(sh: Shell, files: list[str], io: _IO) -> tuple[list[bytes], int]:
    if not files:
        return io.stdin.splitlines(keepends=True), 0
    out, status = [], 0
    for f in files:
        try:
            out += sh.fs.read(sh.fs.norm(f, sh.cwd), sh.uid).splitlines(keepends=True)
        except FsError as e:
            io.err(f"{f}: {e.reason}\n")
            status = 1
    return out, status


def _head_tail(sh: Shell, argv, io):
    n, files, args = 10, [], argv[1:]
    while args:
        a = args.pop(0)
        if a == "-n" and args:
            n = int(args.pop(0))
        elif re.fullmatch(r"-n?\d+", a):
            n = int(a.lstrip("-n"))
        else:
            files.append(a)
    lines, status = _lines_of(sh, files, io)
    io.out(b"".join(lines[:n] if argv[0] == "head" else lines[-n:] if n else []))
    return status


def _c_grep(sh: Shell, argv, io):
    flags, args = "", []
    for a in argv[1:]:
        if a.startswith("-") and len(a) > 1 and not args:
            flags += a[1:]
        else:
            args.append(a)
    if not args:
        return _usage(io, "grep", "Needs 1 argument", 2)
    pattern = args[0] if "F" not in flags else re.escape(args[0])
    try:
        rx = re.compile(pattern.encode(), re.I if "i" in flags else 0)
    except re.error as e:
        return _usage(io, "grep", f"bad regex '{args[0]}': {e}", 2)
    lines, _ = _lines_of(sh, args[1:], io)
    hits = [ln for ln in lines if bool(rx.search(ln)) != ("v" in flags)]
    if "c" in flags:
        io.out(f"{len(hits)}\n")
    elif "q" not in flags:
        io.out(b"".join(ln if ln.endswith(b"\n") else ln + b"\n" for ln in hits))
    return 0 if hits else 1


def _c_wc(sh: Shell, argv, io):
    flags = "".join(a[1:] for a in argv[1:] if a.startswith("-")) or "lwc"
    files = [a for a in argv[1:] if not a.startswith("-")]
    data = io.stdin if not files else b"".join(_lines_of(sh, files, io)[0])
    counts = {"l": data.count(b"\n"), "w": len(data.split()), "c": len(data)}
    io.out(" ".join(str(counts[f]) for f in "lwc" if f in flags) + "\n")
    return 0


def _c_cmd(sh: Shell, argv, io):
    if len(argv) < 2:
        return _usage(io, "cmd", "No service specified; use -l to list all services", 20)
    if argv[1] not in ("power", "activity", "package", "settings", "thermalservice", "cpuinfo"):
        io.err(f"cmd: Can't find service: {argv[1]}\n")
        return 20
    return 0


def _c_date(sh: Shell, argv, io):
    if len(argv) > 1 and argv[1].startswith("+"):
        io.out(time.strftime(argv[1][1:].replace("%s", str(int(time.time())))) + "\n")
    else:
        io.out(time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()) + "\n")
    return 0


BUILTINS: dict[str, Callable[[Shell, list[str], _IO], int]] = {
    "echo": _c_echo, "printf": _c_printf, "getprop": _c_getprop, "setprop": _c_setprop, "cat": _c_cat, "id": _c_id,
    "whoami": _c_whoami, "mkdir": _c_mkdir, "chmod": _c_chmod, "rm": _c_rm, "touch": _c_touch, "ls": _c_ls,
    "uname": _c_uname, "su": _c_su, "taskset": _c_taskset, "sh": _c_sh, "test": _c_test, "[": _c_test,
    "true": lambda sh, a, io: 0, "false": lambda sh, a, io: 1, ":": lambda sh, a, io: 0, "exit": _c_exit,
    "sleep": _c_sleep, "cd": _c_cd, "pwd": lambda sh, a, io: io.out(sh.cwd + "\n") or 0, "export": _c_export,
    "which": _c_which, "command": _c_command, "head": _head_tail, "tail": _head_tail, "grep": _c_grep, "wc": _c_wc,
    "nproc": lambda sh, a, io: io.out("8\n") or 0, "getenforce": lambda sh, a, io: io.out("Enforcing\n") or 0,
    "cmd": _c_cmd, "date": _c_date, "sync": lambda sh, a, io: 0,
    "basename": lambda sh, a, io: io.out(posixpath.basename(a[1].rstrip("/")) + "\n") or 0 if len(a) > 1 else 1,
    "dirname": lambda sh, a, io: io.out((posixpath.dirname(a[1].rstrip("/")) or ".") + "\n") or 0 if len(a) > 1 else 1,
}


# --------------------------------------------------------------------------------------------- benchmark_model

# name -> (type, default, label printed by LogParams); order is benchmark_model's LogParams order.
BENCH_FLAGS: dict[str, tuple[type, object, str]] = {
    "num_runs": (int, 50, "Min num runs"),
    "min_secs": (float, 1.0, "Min runs duration (seconds)"),
    "max_secs": (float, 150.0, "Max runs duration (seconds)"),
    "run_delay": (float, -1.0, "Inter-run delay (seconds)"),
    "run_frequency": (float, -1.0, "Number of prorated runs per second"),
    "num_threads": (int, -1, "Num threads"),
    "use_caching": (bool, False, "Use caching"),
    "benchmark_name": (str, "", "Benchmark name"),
    "output_prefix": (str, "", "Output prefix"),
    "warmup_runs": (int, 1, "Min warmup runs"),
    "warmup_min_secs": (float, 0.5, "Min warmup runs duration (seconds)"),
    "verbose": (bool, False, "Log parameter values verbosely"),
    "dry_run": (bool, False, "Run w/o invoking kernels"),
    "report_peak_memory_footprint": (bool, False, "Report the peak memory footprint"),
    "memory_footprint_check_interval_ms": (int, 50, "Memory footprint check interval (ms)"),
    "graph": (str, "", "Graph"),
    "input_layer": (str, "", "Input layers"),
    "input_layer_shape": (str, "", "Input shapes"),
    "input_layer_value_range": (str, "", "Input value ranges"),
    "enable_op_profiling": (bool, False, "Enable op profiling"),
    "max_profiling_buffer_entries": (int, 1024, "Max initial profiling buffer entries"),
    "use_xnnpack": (bool, False, "Use xnnpack"),
    "xnnpack_force_fp16": (bool, False, "xnnpack_force_fp16"),
    "use_gpu": (bool, False, "Use gpu"),
    "use_nnapi": (bool, False, "Use NNAPI"),
    "require_full_delegation": (bool, False, "Require full delegation"),
    "allow_fp16": (bool, False, "Allow fp16"),
}


def _fmt_param(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _stat_line(times: list[int]) -> str:
    """tsl::Stat<int64_t>::OutputToStream."""
    n = len(times)
    if n == 0:
        return "count=0"
    lo, hi = min(times), max(times)
    if lo == hi:
        return f"count={n} curr={times[-1]}" + ("(all same)" if n > 1 else "")
    avg = sum(times) / n
    std = int(math.sqrt(max(0.0, sum(t * t for t in times) / n - avg * avg)))
    return f"count={n} first={times[0]} curr={times[-1]} min={lo} max={hi} avg={avg:g} std={std}"


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return 0.0


def _random_inputs(interp, rng) -> None:
    import numpy as np

    for d in interp.get_input_details():
        shape = [int(x) if int(x) > 0 else 1 for x in d["shape"]]
        if list(d["shape"]) != shape:
            interp.resize_tensor_input(d["index"], shape)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        shape, dt = [int(x) for x in d["shape"]], np.dtype(d["dtype"])
        if dt == np.bool_:
            v = rng.integers(0, 2, size=shape).astype(bool)
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            lo, hi = (max(int(info.min), -128), min(int(info.max), 127)) if dt.itemsize > 1 else (info.min, info.max)
            v = rng.integers(lo, int(hi) + 1, size=shape).astype(dt)
        else:
            v = rng.standard_normal(size=shape).astype(dt)
        interp.set_tensor(d["index"], v)


def run_benchmark_model(sh: Shell, path: str, argv: list[str], io: _IO) -> int:
    """TFLite's benchmark_model (2.13+ output), running the model with the local LiteRT interpreter."""
    peer, fs = sh.peer, sh.fs
    rss0 = _rss_mb()
    record: dict = {"path": path, "argv": list(argv), "affinity": f"{sh.affinity:x}", "uid": sh.uid}
    peer.benchmarks.append(record)

    def info(msg: str) -> None:
        io.out(f"INFO: {msg}\n")

    def error(msg: str) -> None:
        io.err(f"ERROR: {msg}\n")

    def failed(code: int = 1) -> int:
        error("Benchmarking failed.")
        record["status"] = code
        return code

    info("STARTING!")
    params = {k: v[1] for k, v in BENCH_FLAGS.items()}
    given: list[str] = []
    unconsumed: list[str] = []
    for a in argv[1:]:
        m = re.fullmatch(r"--([A-Za-z0-9_]+)=(.*)", a, re.S)
        if not m or m.group(1) not in BENCH_FLAGS:
            unconsumed.append(a)
            continue
        name, raw = m.groups()
        typ = BENCH_FLAGS[name][0]
        try:
            if typ is bool:
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                value = raw.lower() in ("true", "1")
            elif typ is int:
                value = int(raw, 10)
            elif typ is float:
                value = float(raw)
                if not math.isfinite(value):
                    raise ValueError(raw)
            else:
                value = raw
        except ValueError:
            error(f"Failed to parse flag '--{name}' with value '{raw}'")
            error(f"Usage: {posixpath.basename(path)} --graph=<model.tflite> [flags]")
            return failed()
        params[name] = value
        if name not in given:
            given.append(name)
    record["params"] = dict(params)
    if unconsumed:
        io.out(f"WARN: Unconsumed cmdline flags: {' '.join(unconsumed)}\n")
    info(f"Log parameter values verbosely: [{_fmt_param(params['verbose'])}]")
    for name, (_, _, label) in BENCH_FLAGS.items():
        if name in ("verbose",):
            continue
        if name == "graph" or params["verbose"] or name in given:
            info(f"{label}: [{_fmt_param(params[name])}]")
    if "num_threads" in given or params["verbose"]:
        info(f"#threads used for CPU inference: [{params['num_threads']}]")
    graph = params["graph"]
    if not graph:
        error("Please specify the name of your TF Lite input file with --graph")
        return failed()
    gpath = fs.norm(graph, sh.cwd)
    try:
        data = fs.read(gpath, sh.uid)
    except FsError:
        error(f"Could not open '{graph}'.")
        error(f"Failed to mmap model {graph}")
        return failed()
    if len(data) < 7:
        error("Model provided must have at least 7 bytes to hold identifier.")
        error(f"Failed to mmap model {graph}")
        return failed()
    if data[4:8] != b"TFL3":
        ident = "".join(chr(b) if 32 <= b < 127 else "?" for b in data[4:8])
        error(f"Model provided has model identifier '{ident}', should be 'TFL3'")
        error(f"Failed to mmap model {graph}")
        return failed()
    info(f"Loaded model {graph}")
    explicit_xnnpack = params["use_xnnpack"]
    default_delegates = "use_xnnpack" not in given  # an explicit --use_xnnpack=false skips the default delegate
    t0 = time.perf_counter()
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        interp = Interpreter(
            model_path=str(fs.host(gpath)), num_threads=params["num_threads"] if params["num_threads"] > 0 else None,
            experimental_op_resolver_type=OpResolverType.AUTO if (explicit_xnnpack or default_delegates)
            else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except Exception as e:  # noqa: BLE001 - LiteRT reports a broken flatbuffer as ValueError/RuntimeError
        for line in str(e).strip().splitlines() or [type(e).__name__]:
            error(line.strip())
        error("Failed to initialize the interpreter")
        return failed()
    info("Initialized TensorFlow Lite runtime.")
    if explicit_xnnpack or default_delegates:
        info("Created TensorFlow Lite XNNPACK delegate for CPU.")
    try:
        import numpy as np

        _random_inputs(interp, np.random.default_rng(0))
    except Exception as e:  # noqa: BLE001
        for line in str(e).strip().splitlines() or [type(e).__name__]:
            error(line.strip())
        error("Failed to allocate tensors!")
        return failed()
    init_us = int((time.perf_counter() - t0) * 1e6)
    rss_init = _rss_mb()
    if explicit_xnnpack:
        info("Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.")
    info(f"The input model file size (MB): {len(data) / 1e6:g}")
    info(f"Initialized session in {init_us / 1e3:g}ms.")

    def run(min_runs: int, min_secs: float, max_secs: float) -> tuple[list[int], Exception | None]:
        info(f"Running benchmark for at least {min_runs} iterations and at least {min_secs:g} seconds but "
             f"terminate if exceeding {max_secs:g} seconds.")
        times: list[int] = []
        problem = None
        now = time.perf_counter()
        min_finish, max_finish = now + min_secs, now + max_secs
        run_i = 0
        while (run_i < min_runs or now < min_finish) and now <= max_finish:
            start = time.perf_counter_ns()
            if not params["dry_run"]:
                try:
                    interp.invoke()
                except Exception as e:  # noqa: BLE001
                    problem = e
            times.append((time.perf_counter_ns() - start) // 1000)
            if params["run_delay"] > 0:
                time.sleep(params["run_delay"])
            now = time.perf_counter()
            run_i += 1
            if run_i % 512 == 0:
                sh.check()  # the host went away: stop like a process whose stdout is gone
        info(_stat_line(times))
        io.out(b"\n")
        return times, problem

    warm, problem = run(params["warmup_runs"], params["warmup_min_secs"], params["max_secs"])
    if peer.faults.benchmark_signal:
        sig = peer.faults.benchmark_signal
        io.err(f"{SIGNAL_TEXT.get(sig, f'Signal {sig}')} \n")
        record["status"] = 128 + sig
        return 128 + sig
    timed, problem2 = (run(params["num_runs"], params["min_secs"], params["max_secs"]) if problem is None
                       else ([], None))
    problem = problem or problem2
    if problem is not None:
        for line in str(problem).strip().splitlines():
            error(line.strip())
        error("Node number 0 failed to invoke.")
        return failed()
    avg = sum(timed) / len(timed) if timed else 0.0
    warm_avg = sum(warm) / len(warm) if warm else 0.0
    info(f"Inference timings in us: Init: {init_us}, First inference: {warm[0] if warm else 0}, "
         f"Warmup (avg): {warm_avg:g}, Inference (avg): {avg:g}")
    info("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the "
         "actual memory footprint of the model at runtime. Take the information at your discretion.")
    rss_end = _rss_mb()
    info(f"Memory footprint delta from the start of the tool (MB): init={max(0.0, rss_init - rss0):g} "
         f"overall={max(0.0, rss_end - rss0, rss_init - rss0):g}")
    if params["report_peak_memory_footprint"]:
        info(f"Overall peak memory footprint (MB) via periodic monitoring: {max(rss_end, rss_init):g}")
    record.update(status=0, count=len(timed), avg_us=avg, warmup_count=len(warm))
    return 0
