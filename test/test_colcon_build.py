"""`colcon build` of this repository (scripts/colcon_check.sh, scratch workspace) works and the
install space holds what a ROS 2 user needs: the generated FusionInfo Python module next to the
diffmf_ros sources, diffmf_core, launch/ and config/ files, the `ros2 run` executables, the ament
index entries; and `source install/setup.bash` makes all of it importable outside the checkout.
Takes about a minute on 2 cores (a full rosidl build).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXECUTABLES = {"fusion_node": "fusion_node", "bag_player": "player", "bag_recorder": "recorder"}

pytestmark = pytest.mark.ros


def _source_files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("colcon_ws")
    proc = subprocess.run([str(REPO / "scripts" / "colcon_check.sh"), str(ws)], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"colcon build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return ws / "install"


def _site(install: Path) -> Path:
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return install / "diffmf_ros" / "lib" / pyver / "site-packages"


def test_generated_message_and_sources_share_one_package(install):
    pkg = _site(install) / "diffmf_ros"
    assert (pkg / "msg" / "_fusion_info.py").is_file()
    assert (pkg / "msg" / "__init__.py").is_file()
    assert list(pkg.glob("diffmf_ros_s__rosidl_typesupport_c*.so")), "typesupport extension missing"
    assert "extend_path" in (pkg / "__init__.py").read_text(), "source __init__.py must win"
    for rel in _source_files(REPO / "diffmf_ros"):
        assert (pkg / rel).is_file(), f"diffmf_ros/{rel} not installed"
    core = _site(install) / "diffmf_core"
    for rel in _source_files(REPO / "diffmf_core"):
        assert (core / rel).is_file(), f"diffmf_core/{rel} not installed"


def test_share_files_executables_and_ament_index(install):
    prefix = install / "diffmf_ros"
    share = prefix / "share" / "diffmf_ros"
    for folder in ("launch", "config"):
        files = _source_files(REPO / folder)
        assert files or folder == "launch", f"{folder}/ is empty"
        for rel in files:
            assert (share / folder / rel).is_file(), f"{folder}/{rel} not installed"
    assert (share / "config" / "fastdds_profile.xml").is_file()
    assert (share / "msg" / "FusionInfo.msg").is_file()
    assert (share / "package.xml").is_file()
    for exe in EXECUTABLES:
        path = prefix / "lib" / "diffmf_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK), f"lib/diffmf_ros/{exe} missing or not executable"
        # the Python the package was built for, not the first python3 on PATH
        assert path.read_text().splitlines()[0] == f"#!{sys.executable}", path.read_text()[:200]
    index = prefix / "share" / "ament_index" / "resource_index"
    assert (index / "packages" / "diffmf_ros").is_file()
    assert (index / "rosidl_interfaces" / "diffmf_ros").is_file()


def test_install_space_works_after_sourcing_setup_bash(install, tmp_path):
    code = f"""
import importlib.util, os, sys
from pathlib import Path
from ament_index_python.packages import get_package_share_directory
from rclpy.serialization import deserialize_message, serialize_message
import diffmf_ros.msg
from diffmf_ros.msg import FusionInfo
install = Path(sys.argv[1]).resolve()
inside = lambda p: install in Path(p).resolve().parents
assert inside(diffmf_ros.msg.__file__), diffmf_ros.msg.__file__
assert inside(importlib.util.find_spec("diffmf_core").origin)
for mod in {sorted(EXECUTABLES.values())!r}:
    if (Path({str(REPO / "diffmf_ros")!r}) / (mod + ".py")).is_file():
        assert inside(importlib.util.find_spec("diffmf_ros." + mod).origin), mod
assert inside(get_package_share_directory("diffmf_ros"))
msg = FusionInfo(mode=FusionInfo.MODE_RGB_ONLY, model_name="x", homography=[0.5] * 9)
assert deserialize_message(serialize_message(msg), FusionInfo) == msg
print("ok")
"""
    script = tmp_path / "check_install.py"
    script.write_text(code)
    cmd = f'source "{install}/setup.bash" && exec "{sys.executable}" "{script}" "{install}"'
    proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr
