"""launch/fuse.launch.py read for real: executed with stand-in `launch`/`launch_ros` modules that
record what Node(...) would start (this machine has no launch packages), then checked against the
package layout and config/fuse.yaml."""
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
    mods["launch_ros.actions"].Node = type("Node", (_Recorder,), {})
    mods["ament_index_python.packages"].get_package_share_directory = lambda pkg: str(share_dir / pkg)
    return mods


def _launch(monkeypatch, tmp_path, **cli_args):
    """Run the launch file like `ros2 launch diffmf_ros fuse.launch.py k:=v ...`; the Node kwargs."""
    for name, mod in _stub_modules(tmp_path).items():
        monkeypatch.setitem(sys.modules, name, mod)
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
    assert {"config_file", "thermal_topic", "rgb_topic", "device", "weights", "use_sim_time"} <= set(declared)
    assert all(kw.get("description") for kw in declared.values())


def test_defaults_start_the_node_with_the_shipped_config(monkeypatch, tmp_path):
    _, node = _launch(monkeypatch, tmp_path)
    assert (node["package"], node["executable"], node["name"]) == ("diffmf_ros", "fusion_node", "diffmf_fusion")
    config, overrides = node["parameters"]
    assert Path(config) == tmp_path / "diffmf_ros" / "config" / "fuse.yaml"
    assert overrides == {"use_sim_time": False}  # empty arguments keep the config file's values
    assert ("fused/image", "fused/image") in node["remappings"]  # relative: follows the namespace
    assert ("fused/info", "fused/info") in node["remappings"]
    assert node["namespace"] == "" and node["ros_arguments"] == ["--log-level", "info"]


def test_arguments_become_overrides_and_remappings(monkeypatch, tmp_path):
    _, node = _launch(monkeypatch, tmp_path, config_file="my.yaml", device="cuda:1", weights="w.safetensors",
                      thermal_topic="/ir/raw", rgb_topic="/cam/raw", use_sim_time="True",
                      fused_topic="/uav/fused", info_topic="/uav/fused_info", namespace="/uav1",
                      log_level="debug")
    config, overrides = node["parameters"]
    assert config == "my.yaml"
    assert overrides == {"device": "cuda:1", "weights": "w.safetensors", "thermal_topic": "/ir/raw",
                         "rgb_topic": "/cam/raw", "use_sim_time": True}
    assert dict(node["remappings"]) == {"fused/image": "/uav/fused",
                                        "fused/image/compressed": "/uav/fused/compressed",
                                        "fused/info": "/uav/fused_info"}
    assert node["namespace"] == "/uav1" and node["ros_arguments"] == ["--log-level", "debug"]


def test_executable_and_config_are_installed_by_the_package():
    script = ROOT / "scripts" / "ros" / "fusion_node"  # installed as lib/diffmf_ros/fusion_node
    assert "from diffmf_ros.fusion_node import main" in script.read_text()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "scripts/ros/fusion_node" in cmake and "launch config" in cmake
    params = yaml.safe_load((ROOT / "config" / "fuse.yaml").read_text())["/**/diffmf_fusion"]["ros__parameters"]
    assert params["thermal_topic"] and params["rgb_topic"]


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
