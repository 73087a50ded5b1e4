"""Bag replay demo on a ROS 2 system: `ros2 launch diffmf_ros demo.launch.py [bag:=...]`.

Starts the fusion node (as fuse.launch.py does, with use_sim_time and compressed inputs),
`ros2 bag record` of /fused/image + /fused/info (+ inputs) into `output`, and after `play_delay`
seconds `ros2 bag play <bag> --clock --rate <rate>`. Stop with Ctrl-C once playback has ended;
then `diffmf bag report <output> --input <bag> --outdir <dir>` makes the video/strip/summary.

Launch arguments: bag (default: the package's samples/m3svd_0117_1605), output
(default: fused_bag), rate (1.0), device (empty: config), params_file (empty: the package's
config/fuse.yaml), transport (compressed | raw), play_delay (seconds to let the node load its
model, default 8), recorder (ros2 | diffmf: our diffmf_ros recorder instead of `ros2 bag record`),
player (ros2 | diffmf: our diffmf_ros player instead of `ros2 bag play`; without rosbag2, e.g. the
development venv, use recorder:=diffmf player:=diffmf).
"""
import importlib.util
import os

ARGUMENTS = {
    "bag": "rosbag2 to play (default: <package share>/samples/m3svd_0117_1605)",
    "output": "recorded bag folder (must not exist)",
    "rate": "playback speed factor",
    "device": "auto | cpu | cuda | cuda:N (empty: from config)",
    "transport": "input transport of the bag's camera topics: compressed | raw",
    "play_delay": "seconds before playback starts (model load)",
    "recorder": "ros2 (ros2 bag record) | diffmf (ros2 run diffmf_ros bag_recorder)",
    "player": "ros2 (ros2 bag play) | diffmf (ros2 run diffmf_ros bag_player)",
    "params_file": "node parameters YAML (empty: <package share>/config/fuse.yaml)",
}
DEFAULTS = {"bag": "", "output": "fused_bag", "rate": "1.0", "device": "", "transport": "compressed",
            "play_delay": "8", "recorder": "ros2", "player": "ros2", "params_file": ""}
TOPICS = ["/fused/image", "/fused/info", "/thermal/image_raw/compressed", "/rgb/image_raw/compressed",
          "/thermal/image_raw", "/rgb/image_raw"]


def _fuse_launch(share_dir: str):
    """launch/fuse.launch.py next to this file (its plain-Python node_settings)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuse.launch.py")
    spec = importlib.util.spec_from_file_location("diffmf_fuse_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def actions(values: dict, share_dir: str) -> dict:
    """Plain description of what is started: node kwargs, play and record command lines, and the
    seconds to wait before playing."""
    values = {**DEFAULTS, **values}
    bag = values["bag"] or os.path.join(share_dir, "samples", "m3svd_0117_1605")
    node = _fuse_launch(share_dir).node_settings(
        {"device": values["device"], "use_sim_time": "true", "params_file": values["params_file"]}, share_dir)
    node["parameters"].append({"thermal_transport": values["transport"], "rgb_transport": values["transport"],
                               "qos_reliability": "reliable", "qos_depth": 100})
    if values["player"] == "diffmf":
        play = ["ros2", "run", "diffmf_ros", "bag_player", bag, "--clock", "--rate", values["rate"],
                "--wait-for-subscribers", "1"]
    else:
        play = ["ros2", "bag", "play", bag, "--clock", "--rate", values["rate"]]
    if values["recorder"] == "diffmf":
        record = ["ros2", "run", "diffmf_ros", "bag_recorder", values["output"], "--inputs"]
    else:
        record = ["ros2", "bag", "record", "-s", "mcap", "-o", values["output"], *TOPICS]
    return {"node": node, "play": play, "record": record, "play_delay": float(values["play_delay"])}


def generate_launch_description():
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, TimerAction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node

    def process(cmd: list, name: str):
        # `ros2 run` does not pass launch's SIGINT on to its child: start our executables directly
        if cmd[:2] == ["ros2", "run"]:
            return Node(package=cmd[2], executable=cmd[3], arguments=cmd[4:], output="screen")
        return ExecuteProcess(cmd=cmd, output="screen", name=name)

    def start(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        plan = actions(values, get_package_share_directory("diffmf_ros"))
        return [LifecycleNode(**plan["node"]), process(plan["record"], "recorder"),
                TimerAction(period=plan["play_delay"], actions=[process(plan["play"], "player")])]

    declared = [DeclareLaunchArgument(name, default_value=DEFAULTS[name], description=text)
                for name, text in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=start)])
