"""A phone over adb (adb-shell, no adb binary needed): connect, learn its facts, push models and TFLite's
``benchmark_model``, run it pinned to the profile's core, parse the result into a profilers ``Measurement``.

Why each step is there:
* **Keys.** ADB authenticates the computer with an RSA key the phone's user accepts once. The key is made on
  first use and kept in the user's config directory (``$XDG_CONFIG_HOME/hil-latency/adbkey``), so the phone
  asks once, not on every run. Until it is accepted, connecting fails with a message saying what to tap.
* **Pinning and threads.** The paper measures one thread on one big core: ``taskset <mask>`` from the profile
  and ``--num_threads=1``. The frequency of that core and its governor are read before every run and stored
  with the record; on a rooted phone the governor is set to ``performance``.
* **Heat.** A hot phone throttles; before each run the profile's thermal zones are read and the agent waits
  (bounded) until they are below the profile's limit.
* **benchmark_model's count.** ``--num_runs`` is a minimum (it also runs for ``--min_secs``), so the number of
  runs made is read from ``count=`` (see :mod:`profilers.android.benchmark_output`).
* **Exit codes.** ``adb shell`` (protocol v1) carries no exit status, so every command ends with
  ``; echo __HIL_EXIT=$?`` and the status is read back from the output.

Every adb-level failure (connection dropped, refused, timed out, garbage on the wire) becomes an
:class:`AndroidError` with ``retryable`` set, so the agent can return the job to the queue and reconnect.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import socket
import time
from pathlib import Path

from ..fingerprint import Fingerprint
from ..measurement import Measurement
from .benchmark_output import BenchmarkOutputError, parse_benchmark_output
from .profiles import DeviceProfile

REMOTE_DIR = "/data/local/tmp/hil"
EXIT_RE = re.compile(r"__HIL_EXIT=(\d+)\s*$")


def _close_quietly(dev) -> None:
    try:
        dev.close()
    except Exception:  # noqa: BLE001
        pass


def _eof_transport():
    from adb_shell.transport.tcp_transport import TcpTransport

    class EofTcpTransport(TcpTransport):
        """adb-shell 0.4.4's TCP transport returns b'' forever once the phone closes the socket, and its reader
        spins on it until the read timeout (minutes, at 100% CPU); a closed socket is an error at once here."""

        def bulk_read(self, numbytes, transport_timeout_s):
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data:
                raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
            return data

    return EofTcpTransport


def _EofTcpTransport(host: str, port: int):  # noqa: N802 - a factory standing in for the class
    return _eof_transport()(host, port)


class AndroidError(RuntimeError):
    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "hil-latency"


def load_signer(key_dir: Path | None = None):
    """The computer's ADB key (created on first use), as adb-shell's signer."""
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    key = Path(key_dir or config_dir()) / "adbkey"
    if not key.is_file():
        key.parent.mkdir(parents=True, exist_ok=True)
        keygen(str(key))
        os.chmod(key, 0o600)
    return PythonRSASigner(key.with_suffix(".pub").read_text() if key.with_suffix(".pub").is_file()
                           else Path(str(key) + ".pub").read_text(), key.read_text()), key


def parse_target(adb: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``, port 5555) of a phone in TCP/IP debugging mode."""
    host, _, port = adb.rpartition(":") if ":" in adb else (adb, "", "5555")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"adb: {adb!r} is not allowed; allowed: HOST:PORT of a phone with TCP debugging on "
                         "(`adb tcpip 5555`), e.g. 192.168.1.23:5555, or usb[:SERIAL] with the usb extra")
    return host, int(port)


class AndroidDevice:
    def __init__(self, adb: str, profile: DeviceProfile, benchmark_binary: str | Path, key_dir: Path | None = None,
                 timeout_s: float = 300.0, connect_timeout_s: float = 10.0):
        self.target = adb
        self.profile = profile
        self.binary = Path(benchmark_binary)
        if not self.binary.is_file():
            raise ValueError(f"benchmark_model: no file at {self.binary}; download TFLite's prebuilt Android "
                             "benchmark_model (android_aarch64) from tensorflow.org/lite/performance/measurement")
        self.key_dir = key_dir
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.dev = None
        self.facts: dict[str, str] = {}
        self._binary_pushed = False

    # --- connection ---------------------------------------------------------------------------------
    def connect(self) -> None:
        from adb_shell.adb_device import AdbDevice
        from adb_shell.exceptions import DeviceAuthError

        self.close()
        signer, key = load_signer(self.key_dir)
        if self.target.startswith("usb"):
            from adb_shell.adb_device import AdbDeviceUsb
            from adb_shell.exceptions import InvalidTransportError

            try:
                dev = AdbDeviceUsb(serial=self.target.partition(":")[2] or None,
                                   default_transport_timeout_s=self.connect_timeout_s)
            except InvalidTransportError as e:
                raise AndroidError("USB needs the usb extra: pip install -e '.[usb]'", retryable=False) from e
        else:
            host, port = parse_target(self.target)
            dev = AdbDevice(_EofTcpTransport(host, port), default_transport_timeout_s=self.connect_timeout_s)
        try:
            ok = dev.connect(rsa_keys=[signer], auth_timeout_s=self.connect_timeout_s,
                             read_timeout_s=self.connect_timeout_s)
        except DeviceAuthError as e:
            _close_quietly(dev)
            raise AndroidError(f"the phone at {self.target} has not accepted this computer's ADB key ({key}.pub): "
                               f"unlock it and tap 'Allow' on 'Allow USB debugging?', then retry ({e})") from None
        except Exception as e:  # noqa: BLE001 - every transport failure is "could not connect"
            _close_quietly(dev)
            if "auth" in str(e).lower() or type(e).__name__ in ("TcpTimeoutException", "AdbTimeoutError"):
                raise AndroidError(f"the phone at {self.target} did not complete the ADB handshake "
                                   f"({type(e).__name__}: {e}); if it shows 'Allow USB debugging?', tap Allow "
                                   f"(key {key}.pub)") from None
            raise AndroidError(f"cannot connect to the phone at {self.target} ({type(e).__name__}: {e})") from None
        if not ok:
            _close_quietly(dev)
            raise AndroidError(f"cannot connect to the phone at {self.target} (handshake refused)")
        self.dev = dev
        self.facts = self._read_facts()

    def close(self) -> None:
        if self.dev is not None:
            try:
                self.dev.close()
            except Exception:  # noqa: BLE001
                pass
        self.dev = None
        self._binary_pushed = False

    def _need(self):
        if self.dev is None:
            self.connect()
        return self.dev

    def shell(self, cmd: str, timeout_s: float | None = None) -> tuple[int, str]:
        """Run ``cmd``; (exit status, output). Transport failures raise a retryable AndroidError and drop the
        connection (the next call reconnects)."""
        dev = self._need()
        t = timeout_s or self.timeout_s
        try:  # every read may wait as long as the command may run (a slow model prints nothing for a while)
            out = dev.shell(f"{cmd}; echo __HIL_EXIT=$?", transport_timeout_s=t, read_timeout_s=t, timeout_s=t)
        except Exception as e:  # noqa: BLE001 - adb-shell raises many transport types
            self.close()
            raise AndroidError(f"adb shell {cmd.split()[0]!r} on {self.target} failed: {type(e).__name__}: {e}") \
                from None
        if not isinstance(out, str):
            out = out.decode(errors="replace")
        m = EXIT_RE.search(out.rstrip())
        if m is None:
            self.close()
            raise AndroidError(f"adb shell {cmd.split()[0]!r} on {self.target}: the output ended early "
                               f"(connection dropped?): {out[-300:]!r}")
        return int(m.group(1)), out[:m.start()]

    def push(self, local: Path, remote: str) -> None:
        dev = self._need()
        try:
            dev.push(str(local), remote, st_mode=0o100755, read_timeout_s=self.timeout_s,
                     transport_timeout_s=self.timeout_s)
        except Exception as e:  # noqa: BLE001
            self.close()
            raise AndroidError(f"adb push {local.name} to {self.target} failed: {type(e).__name__}: {e}") from None

    # --- facts --------------------------------------------------------------------------------------
    def _read_facts(self) -> dict[str, str]:
        facts = {}
        for key, prop in (("model", "ro.product.model"), ("manufacturer", "ro.product.manufacturer"),
                          ("soc", "ro.soc.model"), ("platform", "ro.board.platform"),
                          ("release", "ro.build.version.release"), ("sdk", "ro.build.version.sdk"),
                          ("abi", "ro.product.cpu.abi"), ("serial", "ro.serialno")):
            code, out = self.shell(f"getprop {prop}", 30)
            facts[key] = out.strip() if code == 0 else ""
        facts["soc"] = facts["soc"] or facts["platform"]
        code, out = self.shell("id", 30)
        facts["rooted"] = "1" if "uid=0(" in out else "0"
        return facts

    def core_state(self) -> dict[str, str | None]:
        """Governor and frequencies of the profile's core, read now (they can change between runs)."""
        state: dict[str, str | None] = {}
        for key, path in self.profile.cpufreq_paths.items():
            code, out = self.shell(f"cat {path}", 30)
            state[key] = out.strip() if code == 0 and out.strip() else None
        return state

    def temperatures(self) -> list[float]:
        """°C of the profile's thermal zones (sysfs gives millidegrees on most phones, degrees on some)."""
        code, out = self.shell("for z in /sys/class/thermal/thermal_zone*; do echo \"$z $(cat $z/type) "
                               "$(cat $z/temp)\"; done", 30)
        import fnmatch

        temps = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) != 3 or not re.fullmatch(r"-?\d+", parts[2]):
                continue
            if any(fnmatch.fnmatch(parts[1], pat) for pat in self.profile.thermal_zones):
                v = int(parts[2])
                temps.append(v / 1000 if abs(v) > 200 else float(v))
        return temps

    def wait_cool(self, poll_s: float = 5.0) -> float | None:
        """Wait until the watched zones are below ``max_temp_c`` (bounded by the profile's cooldown
        timeout); returns the hottest reading at the start of the run."""
        deadline = time.monotonic() + self.profile.cooldown_timeout_s
        while True:
            temps = self.temperatures()
            hottest = max(temps) if temps else None
            if hottest is None or hottest < self.profile.max_temp_c or time.monotonic() > deadline:
                return hottest
            time.sleep(poll_s)

    def prepare(self) -> None:
        """Push the benchmark binary once per connection; performance governor (rooted) or fixed-performance
        mode (Android 11+, if the profile asks)."""
        self._need()
        if self._binary_pushed:
            return
        self.shell(f"mkdir -p {REMOTE_DIR}", 30)
        self.push(self.binary, f"{REMOTE_DIR}/benchmark_model")
        self.shell(f"chmod 755 {REMOTE_DIR}/benchmark_model", 30)
        if self.facts.get("rooted") == "1" and "governor" in self.profile.cpufreq_paths:
            self.shell(f"echo performance > {self.profile.cpufreq_paths['governor']}", 30)
        sdk = int(self.facts.get("sdk") or 0)
        if self.profile.android.use_fixed_performance_mode:
            cmd = self.profile.android.fixed_performance_mode_command(sdk)
            if cmd:
                self.shell(cmd, 30)
        self._binary_pushed = True

    def fingerprint(self) -> Fingerprint:
        self._need()
        st = self.core_state()
        as_int = lambda v: int(v) if v and v.isdigit() else None  # noqa: E731
        h = hashlib.sha256(self.binary.read_bytes()).hexdigest()[:12]
        return Fingerprint(
            backend="tflite-android", cpu_model=self.profile.cpu_core_model, arch="aarch64", flags=[],
            cores=1, core=self.profile.core_index, runtime="benchmark_model", runtime_version=h,
            governor=st.get("governor"), freq_khz=as_int(st.get("cur")), freq_max_khz=as_int(st.get("cpuinfo_max")),
            os=f"Android {self.facts.get('release', '?')} (API {self.facts.get('sdk', '?')})",
            hostname=self.facts.get("serial") or self.target,
            android={"model": self.facts.get("model", ""), "soc": self.facts.get("soc", ""),
                     "manufacturer": self.facts.get("manufacturer", ""), "sdk": self.facts.get("sdk", ""),
                     "profile": self.profile.name, "rooted": self.facts.get("rooted", "0")})

    # --- measuring ----------------------------------------------------------------------------------
    def measure(self, model: str | Path, protocol=None) -> Measurement:
        """One benchmark_model run of ``model`` (a .tflite) on the profile's core. Model and tool failures
        come back as failed Measurements; transport failures raise a retryable AndroidError."""
        path = Path(model)
        common = dict(backend="tflite-android", model=str(path), core=self.profile.core_index)
        if path.suffix != ".tflite" or not path.is_file():
            return Measurement.failure(kind="not-a-model", error=f"{path.name}: tflite-android takes .tflite files",
                                       **common)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.prepare()
        hottest = self.wait_cool()
        before = self.core_state()
        remote = f"{REMOTE_DIR}/{digest[:16]}.tflite"
        self.push(path, remote)
        args = " ".join(self.profile.benchmark_args(remote))
        cmd = f"{' '.join(self.profile.taskset_prefix())} {REMOTE_DIR}/benchmark_model {args} 2>&1"
        t0 = time.perf_counter()
        code, out = self.shell(cmd, self.timeout_s)
        duration = time.perf_counter() - t0
        self.shell(f"rm -f {remote}", 30)
        fp = self.fingerprint()
        try:
            r = parse_benchmark_output(out, exit_code=code)
        except BenchmarkOutputError as e:
            if e.retryable:
                raise AndroidError(f"benchmark_model on {self.target}: {e.message}") from None
            return Measurement.failure(kind=e.kind.value, error=e.message, model_sha256=digest, fingerprint=fp,
                                       duration_s=duration, **common)
        avg, std, n = r.avg_us / 1e3, (r.std_us or 0.0) / 1e3, r.count
        half = 1.96 * std / math.sqrt(n) if n > 1 else None
        half_pct = half / avg * 100 if half is not None and avg > 0 else None
        freq_ok = (before.get("cur") is None or not self.profile.max_freq_khz
                   or int(before["cur"]) >= 0.95 * self.profile.max_freq_khz)
        stable = half_pct is not None and half_pct <= 2.0 and freq_ok
        reason = None if stable else ("core below 95% of its max frequency" if not freq_ok else
                                      f"95% CI half-width {half_pct:.1f}% of the mean" if half_pct else "one run")
        return Measurement(**common, model_sha256=digest, fingerprint=fp, latency_ms=avg, estimator="mean",
                           mean_ms=avg, std_ms=std, min_ms=r.min_us / 1e3, n=n, rounds=1, runs_per_round=n,
                           warmups=r.warmup.count if r.warmup else 0,
                           ci_low_ms=avg - half if half is not None else None,
                           ci_high_ms=avg + half if half is not None else None, ci_half_pct=half_pct,
                           stable=stable, reason=reason, duration_s=duration,
                           device_state={**before, "hottest_c": hottest, "profile": self.profile.name,
                                         "benchmark_count": n})
