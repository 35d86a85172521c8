"""Local processes for tests and demos: start in their own process group, die with the parent,
log to a file, stop by SIGTERM then SIGKILL; waiting for a condition; free loopback ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger("rankexp.local.process")


HOST = "127.0.0.1"
# Loopback requests must not go through an http_proxy from the environment.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# -------------------------------------------------------------------------- processes


_PR_SET_PDEATHSIG = 1
try:  # resolved here, not in the forked child, where loading a library is unsafe
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, even by SIGKILL,
    so a killed test run or CLI leaves no servers behind."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessExitedError(RuntimeError):
    """A managed process exited while it should be running."""


class Process:
    """One long-running child process with its output in a log file.

    It runs in its own session (process group), so a terminal's Ctrl-C reaches only
    the Python parent, which stops children in order; :meth:`stop` signals the
    whole group. Generic on purpose: any server (Prometheus, a ranker) fits.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"Process({self.name!r}, pid={self.pid}, returncode={self.returncode})"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def start(self) -> None:
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        log.debug("starting %s: %s", self.name, " ".join(self.argv))
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except BaseException:
            self._log.close()
            self._log = None
            raise

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def ensure_running(self) -> None:
        """Raise :class:`ProcessExitedError` (with the log's tail) unless it runs."""
        if self._popen is None:
            raise ProcessExitedError(f"{self.name} was never started")
        code = self._popen.poll()
        if code is not None:
            raise ProcessExitedError(
                f"{self.name} exited with code {code}; last lines of {self.log_path}:\n"
                + self.log_tail()
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            data = self.log_path.read_bytes()[-16384:]
        except OSError:
            return "(no log)"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL and wait."""
        popen = self._popen
        try:
            if popen is not None and popen.poll() is None:
                self._signal_group(popen, signal.SIGTERM)
                try:
                    popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s ignored SIGTERM for %.0f s: killing it", self.name, timeout)
                    self._signal_group(popen, signal.SIGKILL)
                    popen.wait(timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def kill(self) -> None:
        """SIGKILL the process group (a crash: no shutdown code runs) and reap it."""
        popen = self._popen
        try:
            if popen is not None and popen.poll() is None:
                self._signal_group(popen, signal.SIGKILL)
                popen.wait(10)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    @staticmethod
    def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # Only while the leader is unreaped: its pid (= the group id) cannot be reused.
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            popen.send_signal(sig)


def wait_for(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    processes: Sequence[Process] = (),
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it is true; fail early when one of ``processes`` exits.

    Exceptions from ``check`` count as "not yet". Raises :class:`TimeoutError`.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        for proc in processes:
            proc.ensure_running()
        try:
            if check():
                return
        except Exception as exc:  # not ready yet: connection refused, 500, ...
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            tails = "".join(
                f"\n--- last lines of {p.name} ({p.log_path}):\n{p.log_tail()}" for p in processes
            )
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s{detail}{tails}")
        time.sleep(interval)


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct free TCP ports on ``host`` (held open together while chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports
