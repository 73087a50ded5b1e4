"""Test helpers for ROS 2: the test ROS environment, child processes, waiting without sleeps.

Used by test/conftest.py (which applies ``apply_ros_env()`` at import) and importable from any
test as ``import rosutil`` (test/ is on sys.path under pytest). No rclpy import at module level,
so non-ROS tests never load the middleware.

* ``apply_ros_env()``: sets, in ``os.environ`` (so child processes inherit it), a ROS_DOMAIN_ID
  private to this test session (1..100, claimed with a lock file so concurrent sessions on this
  machine never share one), the repo's Fast DDS profile, LOCALHOST discovery, rmw_fastrtps_cpp,
  ROS_PYTHON_CHECK_FIELDS=1 and the venv on AMENT_PREFIX_PATH.
* ``start_python_module(module, *args)``: runs ``<this python> -m module args`` in its own
  process group with the same environment; output goes to a log file (no pipe can fill up).
  ``RosProcess.stop()`` sends SIGINT, then SIGTERM, then SIGKILL to the whole group.
* ``spin_until(executor, predicate, timeout, what)``: spins until ``predicate()`` is true, e.g.
  ``sub.get_publisher_count() > 0``; fails with ``what`` (and optional diagnostics) on timeout.
* ``spin_for(executor, seconds, until)``: spins for up to ``seconds``, stopping early once
  ``until()`` holds; never fails (the caller asserts on what arrived).
* ``wait_locked(lock, predicate, timeout, what)``: polls ``predicate()`` under ``lock`` (data filled
  by a background executor) until it holds; AssertionError naming ``what`` on timeout.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

TEST_DIR = Path(__file__).resolve().parent
REPO_ROOT = TEST_DIR.parent
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_profile.xml"

DOMAIN_RANGE = (1, 100)
_held_locks: list[int] = []  # fds of claimed domain lock files, held for the process lifetime


def allocate_domain_id(lo: int = DOMAIN_RANGE[0], hi: int = DOMAIN_RANGE[1]) -> int:
    """A ROS_DOMAIN_ID in [lo, hi] that no other live process on this machine has claimed.

    Starts at a pid-derived id and claims ``<tmp>/diffmf-ros-domain-<id>.lock`` with a
    non-blocking flock (released automatically when this process exits, even on a crash).
    ``DIFFMF_TEST_DOMAIN_ID`` forces an id.
    """
    forced = os.environ.get("DIFFMF_TEST_DOMAIN_ID")
    if forced:
        return int(forced)
    span = hi - lo + 1
    start = os.getpid() % span
    lock_dir = Path(tempfile.gettempdir())
    for i in range(span):
        domain = lo + (start + i) % span
        fd = os.open(lock_dir / f"diffmf-ros-domain-{domain}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held_locks.append(fd)
        return domain
    return lo + start  # every id claimed: fall back to the pid-derived one


def ros_env_values(domain_id: int) -> dict[str, str]:
    """The variables ``apply_ros_env`` sets (AMENT_PREFIX_PATH handled separately)."""
    return {
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),
        "ROS_PYTHON_CHECK_FIELDS": "1",
    }


def apply_ros_env(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> int:
    """Apply the test ROS environment to ``environ``; returns the domain id. Idempotent."""
    if environ.get("DIFFMF_TEST_ROS_ENV") == "1" and environ.get("ROS_DOMAIN_ID"):
        return int(environ["ROS_DOMAIN_ID"])  # already applied (e.g. inherited by a child)
    domain = allocate_domain_id()
    environ.update(ros_env_values(domain))
    environ.pop("ROS_LOCALHOST_ONLY", None)  # ignored by this ROS release; avoid confusion
    if (Path(sys.prefix) / "share" / "ament_index").is_dir():
        parts = [p for p in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
        if sys.prefix not in parts:
            environ["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *parts])
    environ["DIFFMF_TEST_ROS_ENV"] = "1"
    return domain


class RosProcess:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, popen: subprocess.Popen, name: str, log_path: Path):
        self.popen = popen
        self.name = name
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr interleaved)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def describe(self) -> str:
        state = "running" if self.poll() is None else f"exited rc={self.poll()}"
        return f"--- {self.name} (pid {self.pid}, {state}) output ---\n{self.output()[-4000:]}"

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float = 5.0) -> int:
        """SIGINT (clean rclpy shutdown), then SIGTERM, then SIGKILL; returns the exit code."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            if self.popen.poll() is not None:
                break
            self._signal_group(sig)
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self._signal_group(signal.SIGKILL)  # stray grandchildren in the group
        return self.popen.wait()

    def stop_expecting_clean_exit(self, timeout: float = 20.0) -> None:
        """Stop it (see ``stop``), print its output, and fail unless SIGINT ended it with code 0."""
        rc = self.stop(timeout=timeout)
        print(self.describe())
        assert rc == 0, f"{self.name} exit code {rc} after SIGINT"

    def __enter__(self) -> "RosProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_python_module(module: str, *args: str, env: dict[str, str] | None = None,
                        cwd: str | Path | None = None, log_dir: str | Path | None = None,
                        pythonpath: tuple[str | Path, ...] = (TEST_DIR,)) -> RosProcess:
    """Start ``sys.executable -m module *args`` with this process's environment (plus ``env``).

    ``pythonpath`` entries are prepended to PYTHONPATH (test/ by default, so helper modules
    next to the tests can be started). ROS arguments go in ``args`` as usual
    (``--ros-args -p name:=value``).
    """
    child_env = dict(os.environ)
    child_env.update(env or {})
    parts = [str(p) for p in pythonpath] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if parts:
        child_env["PYTHONPATH"] = os.pathsep.join(parts)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="diffmf-proc-"))
    log_path = log_dir / f"{module.replace('.', '_')}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        popen = subprocess.Popen([sys.executable, "-m", module, *args], env=child_env,
                                 cwd=str(cwd) if cwd else None, stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return RosProcess(popen, module, log_path)


def spin_until(executor, predicate: Callable[[], bool], timeout: float, what: str,
               diagnostics: Callable[[], str] | None = None, step: float = 0.05) -> float:
    """Spin ``executor`` until ``predicate()`` holds; returns the seconds it took.

    Raises AssertionError naming ``what`` (plus ``diagnostics()``, e.g. a child's output) on
    timeout. Never sleeps a fixed time: it only waits for work on the executor.
    """
    start = time.monotonic()
    deadline = start + timeout
    while not predicate():
        if time.monotonic() > deadline:
            extra = f"\n{diagnostics()}" if diagnostics else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        executor.spin_once(timeout_sec=step)
    return time.monotonic() - start


def spin_for(executor, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
    """Spin ``executor`` for up to ``seconds``, returning early once ``until()`` holds."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        executor.spin_once(timeout_sec=0.01)


def wait_locked(lock, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate()`` under ``lock`` every 20 ms until it holds; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            if predicate():
                return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
