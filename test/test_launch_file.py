"""launch/fuse.launch.py read in this process: executed with stand-in `launch`/`launch_ros` modules
that record what LifecycleNode(...) would start (fast; test_launch_tests.py runs it for real with
`ros2 launch` / launch_testing), then checked against the package layout and config/fuse.yaml."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = ROOT / "launch" / "fuse.launch.py"


class _Recorder:
    """Stand-in for a launch action / substitution: keeps its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorder):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


def _stub_modules(share_dir: Path) -> dict[str, types.ModuleType]:
    mods = {name: types.ModuleType(name) for name in (
        "launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions",
        "ament_index_python", "ament_index_python.packages")}
    mods["launch"].LaunchDescription = lambda entities: list(entities)
    mods["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorder,), {})
    mods["launch.actions"].OpaqueFunction = type("OpaqueFunction", (_Recorder,), {})
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch_ros.actions"].LifecycleNode = type("LifecycleNode", (_Recorder,), {})
    mods["ament_index_python.packages"].get_package_share_directory = lambda pkg: str(share_dir / pkg)
    return mods


def _launch(monkeypatch, tmp_path, environ=None, **cli_args):
    """Run the launch file like `ros2 launch diffmf_ros fuse.launch.py k:=v ...`; the Node kwargs."""
    for name, mod in _stub_modules(tmp_path).items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    for name, value in (environ or {}).items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("fuse_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description()
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    values = {name: kw["default_value"] for name, kw in declared.items()}
    unknown = set(cli_args) - set(values)
    assert not unknown, f"not declared: {unknown}"
    values.update(cli_args)
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    (node,) = opaque.kwargs["function"](types.SimpleNamespace(launch_configurations=values))
    return declared, node.kwargs


def test_declares_the_documented_arguments(monkeypatch, tmp_path):
    declared, _ = _launch(monkeypatch, tmp_path)
    assert {"params_file", "config_file", "thermal_topic", "rgb_topic", "fuser", "device", "weights", "use_sim_time",
            "namespace", "autostart", "respawn", "respawn_delay", "fused_topic", "info_topic",
            "fastdds_profile"} <= set(declared)
    assert all(kw.get("description") for kw in declared.values())


def test_defaults_start_the_node_with_the_shipped_config(monkeypatch, tmp_path):
    _, node = _launch(monkeypatch, tmp_path)
    assert (node["package"], node["executable"], node["name"]) == ("diffmf_ros", "fusion_node", "diffmf_fusion")
    config, overrides = node["parameters"]
    assert Path(config) == tmp_path / "diffmf_ros" / "config" / "fuse.yaml"
    assert overrides == {"use_sim_time": False}  # empty arguments keep the config file's values
    assert ("fused/image", "fused/image") in node["remappings"]  # relative: follows the namespace
    assert ("fused/camera_info", "fused/camera_info") in node["remappings"]
    assert ("fused/info", "fused/info") in node["remappings"]
    assert node["namespace"] == "" and node["ros_arguments"] == ["--log-level", "info"]
    assert node["respawn"] is False and node["respawn_delay"] == 2.0
    # the node gets the package's Fast DDS profile (large images over shared memory)
    profile = tmp_path / "diffmf_ros" / "config" / "fastdds_profile.xml"
    assert node["additional_env"] == {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile)}


def test_arguments_become_overrides_and_remappings(monkeypatch, tmp_path):
    _, node = _launch(monkeypatch, tmp_path, params_file="my.yaml", fuser="diffmf", device="cuda:1",
                      weights="w.safetensors", thermal_topic="/ir/raw", rgb_topic="/cam/raw", use_sim_time="True",
                      fused_topic="/uav/det/image", info_topic="/uav/fused_info", namespace="/uav1",
                      log_level="debug", autostart="false", respawn="true", respawn_delay="5",
                      fastdds_profile="none")
    config, overrides = node["parameters"]
    assert config == "my.yaml"
    assert overrides == {"fuser": "diffmf", "device": "cuda:1", "weights": "w.safetensors", "thermal_topic": "/ir/raw",
                         "rgb_topic": "/cam/raw", "use_sim_time": True, "autostart": False}
    assert dict(node["remappings"]) == {"fused/image": "/uav/det/image",
                                        "fused/image/compressed": "/uav/det/image/compressed",
                                        "fused/camera_info": "/uav/det/camera_info",
                                        "fused/info": "/uav/fused_info"}
    assert node["namespace"] == "/uav1" and node["ros_arguments"] == ["--log-level", "debug"]
    assert node["respawn"] is True and node["respawn_delay"] == 5.0 and node["additional_env"] == {}


def test_config_file_is_an_alias_and_a_set_profile_is_kept(monkeypatch, tmp_path):
    _, node = _launch(monkeypatch, tmp_path, environ={"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"},
                      config_file="old.yaml", autostart="true")
    assert node["parameters"] == ["old.yaml", {"use_sim_time": False, "autostart": True}]
    assert node["additional_env"] == {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"}
    _, node = _launch(monkeypatch, tmp_path, config_file="old.yaml", params_file="new.yaml")
    assert node["parameters"][0] == "new.yaml"


def test_executable_and_config_are_installed_by_the_package():
    script = ROOT / "scripts" / "ros" / "fusion_node"  # installed as lib/diffmf_ros/fusion_node
    assert "from diffmf_ros.fusion_node import main" in script.read_text()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "scripts/ros/${_exe}" in cmake and "foreach(_exe fusion_node" in cmake and "launch config" in cmake
    assert '"#!${Python3_EXECUTABLE}"' in cmake  # not `/usr/bin/env python3` (test_colcon_build checks it)
    params = yaml.safe_load((ROOT / "config" / "fuse.yaml").read_text())["/**/diffmf_fusion"]["ros__parameters"]
    assert params["thermal_topic"] and params["rgb_topic"]


def test_package_xml_declares_the_lifecycle_messages_for_run_time():
    import xml.etree.ElementTree as ET

    root = ET.parse(ROOT / "package.xml").getroot()
    exec_deps = {e.text for e in root if e.tag in ("exec_depend", "depend")}
    assert {"lifecycle_msgs", "rclpy", "launch_ros", "sensor_msgs", "diagnostic_msgs"} <= exec_deps


def test_config_documents_exactly_the_node_parameters():
    fusion_node = pytest.importorskip("diffmf_ros.fusion_node", reason="rclpy / diffmf_ros.msg not built")
    params = yaml.safe_load((ROOT / "config" / "fuse.yaml").read_text())["/**/diffmf_fusion"]["ros__parameters"]
    assert set(params) == set(fusion_node.PARAM_BY_NAME)
    for name, value in params.items():
        assert type(value) is type(fusion_node.PARAM_BY_NAME[name].default), name
    assert fusion_node.check_params(params) == []
    text = (ROOT / "config" / "fuse.yaml").read_text().splitlines()
    for i, line in enumerate(text):  # every parameter line is in a block that starts with a comment
        if line.startswith("    ") and not line.lstrip().startswith("#"):
            j = i
            while text[j - 1].strip() and not text[j - 1].lstrip().startswith("#"):
                j -= 1
            assert text[j - 1].lstrip().startswith("#"), line
