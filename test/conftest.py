"""Shared pytest setup for diffmf.

At import (before any test, so every child process inherits it) SIGINT gets its default handler
back (see below) and the ROS test environment is
applied to ``os.environ``: a ROS_DOMAIN_ID private to this session, Fast DDS profile, LOCALHOST
discovery, rmw_fastrtps_cpp, ROS_PYTHON_CHECK_FIELDS=1 (see rosutil.apply_ros_env).

Markers: ``slow`` (long soak/overload runs; ``make test`` runs ``-m "not slow"``, ``make soak``
runs them), ``ros`` (needs rclpy and the middleware).

Fixtures:
* ``ros_domain_id``: the session's domain id.
* ``ros_process``: factory ``ros_process(module, *args, env=None, cwd=None)`` -> RosProcess;
  every process it started is stopped (SIGINT, SIGTERM, SIGKILL on its process group) at
  teardown and its output is printed (shown by pytest when the test fails).
* ``rclpy_node``: a fresh rclpy Context + Node + SingleThreadedExecutor ``(node, executor)``,
  shut down at teardown.
* ``shared_data``: Path of ../shared/data (or $DIFFMF_DATA); skips, naming the path, when absent.
"""
from __future__ import annotations

import os
import re
import signal

import pytest

import rosutil

# launch_testing tests (test_*_launch.py) run under `launch_test`, started by test_launch_tests.py
# (see launchutil.py); pytest itself must not import them as test modules.
collect_ignore_glob = ["test_*_launch.py"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # a pytest-xdist worker inherits the controller's environment, domain id included: each worker
    # claims its own, or the ROS tests of two workers would see each other's topics
    os.environ.pop("DIFFMF_TEST_ROS_ENV", None)
    # PyTorch (and OpenMP) would start one compute thread per core in every worker and in every child
    # process: more threads than cores, which spin-wait against each other (2 workers on 2 cores took
    # 5-10x longer for some model tests while another process was busy). Share the cores out instead,
    # unless OMP_NUM_THREADS is set already. Set before any test module imports torch.
    if "OMP_NUM_THREADS" not in os.environ:
        _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))
ROS_DOMAIN_ID = rosutil.apply_ros_env()

# pytest-xdist (``make test`` runs two workers) starts its workers with SIGINT ignored, and an
# ignored signal stays ignored in every process they start: the tools and nodes that the tests
# interrupt with SIGINT would never see it. Restore the default before any child is started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: long soak/overload runs; excluded from `make test`, run by `make soak`")
    config.addinivalue_line("markers", "ros: needs rclpy and the ROS 2 middleware")


def pytest_report_header(config):
    return f"diffmf: ROS_DOMAIN_ID={ROS_DOMAIN_ID}, Fast DDS profile {rosutil.FASTDDS_PROFILE.name}"


@pytest.fixture(scope="session")
def ros_domain_id() -> int:
    return ROS_DOMAIN_ID


@pytest.fixture
def ros_process(tmp_path):
    started: list[rosutil.RosProcess] = []

    def start(module: str, *args: str, env=None, cwd=None) -> rosutil.RosProcess:
        proc = rosutil.start_python_module(module, *args, env=env, cwd=cwd, log_dir=tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()
        print(proc.describe())


@pytest.fixture
def rclpy_node(request):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("diffmf_test_" + re.sub(r"\W", "_", request.node.name)[:40], context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


@pytest.fixture(scope="session")
def shared_data():
    import os

    from diffmf_core.common.paths import repo_root, shared_data_dir

    path = shared_data_dir()
    if path is None:
        where = os.environ.get("DIFFMF_DATA") or repo_root().parent / "shared" / "data"
        pytest.skip(f"shared data folder not found: {where} (set DIFFMF_DATA to use another)")
    return path


@pytest.fixture
def one_thread():
    """One PyTorch thread for tiny-tensor tests: avoids oversubscribing the 2-core CI machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
