"""Helpers for the launch_testing tests (test/test_*_launch.py) and for running them from pytest.

The launch tests start the launch files for real (`ros2 launch diffmf_ros ...` or an included
launch description) and look at the node the way a user does: rclpy probes and the `ros2` CLI.
They run under launch_testing's own runner, `launch_test` (one subprocess per file, started by
test/test_launch_tests.py), not as pytest modules: this launch_testing's pytest plugin does not
load under pytest >= 8.1 (ros2/launch#979; pyproject.toml keeps it out), and conftest.py leaves
those files out of pytest's collection. `colcon test` runs the same files (CMakeLists.txt).

* ``unavailable()``: why the launch tools cannot run here (None when they can).
* ``run_launch_test(name, tmp_path)``: ``launch_test test/<name>`` with the session's ROS
  environment, the venv's bin/ on PATH and DIFFMF_LAUNCH_TMP=tmp_path; fails with its output.
* ``scratch_dir()``: the folder a launch test writes into (DIFFMF_LAUNCH_TMP, else a new temp dir).
* ``ros2(*args, until=...)``: a `ros2` CLI command (always --no-daemon: no daemon process outlives a
  test), repeated until it succeeds and its output satisfies ``until``; its stdout.
* ``Listener(topics)``: an rclpy node in its own context collecting messages of ``{key: (type,
  topic)}`` in ``self.got[key]`` on a background executor; ``wait(predicate, timeout, what)``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import rosutil

TEST_DIR = Path(__file__).resolve().parent
REPO_ROOT = TEST_DIR.parent
VENDOR = REPO_ROOT.parent / "shared" / "vendor" / "ros2"
LAUNCH_TESTS = ("test_fuse_launch.py", "test_fuse_conventions_launch.py", "test_demo_launch.py")
SAMPLE_BAG = REPO_ROOT / "samples" / "m3svd_0117_1605"


def _bin(name: str) -> str | None:
    path = Path(sys.prefix) / "bin" / name
    return str(path) if path.is_file() else shutil.which(name)


def unavailable() -> str | None:
    """Why launch_testing / ros2 launch cannot run here, or None."""
    missing = [m for m in ("launch", "launch_ros", "launch_testing", "ros2cli") if importlib.util.find_spec(m) is None]
    if missing or not _bin("launch_test") or not _bin("ros2"):
        return (f"ROS 2 launch tools not installed ({', '.join(missing) or 'launch_test/ros2 scripts'} missing): "
                f"`make setup` installs them from {VENDOR} when that folder exists")
    return None


def child_env(tmp_path: Path | None = None) -> dict[str, str]:
    """This process's environment (the test ROS environment of conftest.py) with the venv's bin/
    first on PATH (ros2, launch_test) and test/ on PYTHONPATH."""
    env = dict(os.environ)
    bindir = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join([bindir] + [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bindir])
    env["PYTHONPATH"] = os.pathsep.join([str(TEST_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("PYTHONUNBUFFERED", "1")
    if tmp_path is not None:
        env["DIFFMF_LAUNCH_TMP"] = str(tmp_path)
    return env


def run_launch_test(name: str, tmp_path: Path, timeout: float = 200.0) -> str:
    """Run ``launch_test test/<name>``; returns its output, fails with the end of it."""
    log = tmp_path / f"{Path(name).stem}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([_bin("launch_test"), str(TEST_DIR / name)], cwd=REPO_ROOT, env=child_env(tmp_path),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            rc = proc.wait()
    text = log.read_text(errors="replace")
    assert rc == 0, f"launch_test {name} exited with {rc}:\n{text[-12000:]}"
    return text


def scratch_dir() -> Path:
    """Where a launch test writes its files (the pytest tmp_path when run by run_launch_test)."""
    return Path(os.environ.get("DIFFMF_LAUNCH_TMP") or tempfile.mkdtemp(prefix="diffmf-launch-"))


def ros2(*args: str, until=None, timeout: float = 30.0) -> str:
    """``ros2 <args> --no-daemon``, repeated until it succeeds and ``until(stdout)`` holds (without
    a daemon each call discovers the graph afresh in its --spin-time, 0.5 s, which can be too short
    on a busy machine); its stdout, or AssertionError naming the command and its last output after
    ``timeout`` s."""
    cmd = [_bin("ros2") or "ros2", *args, "--no-daemon"]
    start = time.monotonic()
    deadline = start + timeout
    attempts = 0
    while True:
        attempts += 1
        proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0 and (until is None or until(proc.stdout)):
            print(f"ros2 {' '.join(args)}: {time.monotonic() - start:.1f} s, {attempts} attempt(s)", flush=True)
            return proc.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"{' '.join(cmd)}: rc {proc.returncode}, not as expected after {timeout:.0f} s:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        time.sleep(0.2)


class Listener:
    """Collects messages of several topics in this process (see the module docstring)."""

    def __init__(self, topics: dict, depth: int = 100, name: str = "diffmf_launch_probe") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.got: dict[str, list] = {key: [] for key in topics}
        for key, (msg_type, topic) in topics.items():
            self.node.create_subscription(msg_type, topic, lambda msg, k=key: self._add(k, msg), depth)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _add(self, key: str, msg) -> None:
        with self.lock:
            self.got[key].append(msg)

    def count(self, key: str) -> int:
        with self.lock:
            return len(self.got[key])

    def wait(self, predicate, timeout: float, what: str) -> None:
        """Poll ``predicate()`` (under the lock) until true; AssertionError naming ``what`` after ``timeout`` s."""
        rosutil.wait_locked(self.lock, predicate, timeout, what)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.thread.join(10.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
