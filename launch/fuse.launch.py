"""Start the diffmf_fusion node: `ros2 launch diffmf_ros fuse.launch.py device:=cuda`.

Launch arguments (an empty value keeps the config file's setting):
  config_file    parameters YAML (default: the package's config/fuse.yaml)
  thermal_topic  thermal camera topic          rgb_topic  RGB camera topic
  device         auto | cpu | cuda | cuda:N    weights    .safetensors file
  use_sim_time   true when replaying a bag with --clock
  namespace      the node's namespace (its relative topics follow it: /uav1/fused/image ...)
  log_level      debug | info | warn | error | fatal
  fused_topic    where fused/image (and fused/image/compressed) go, by remapping
  info_topic     where fused/info goes, by remapping

`node_settings()` is plain Python (no launch import) so tests can check what would be started.
"""
import os

PACKAGE = "diffmf_ros"
EXECUTABLE = "fusion_node"
NODE_NAME = "diffmf_fusion"
# launch argument -> description; parameter overrides use the same names.
ARGUMENTS = {
    "config_file": "parameters YAML (default: <package share>/config/fuse.yaml)",
    "thermal_topic": "thermal camera topic (empty: from config_file)",
    "rgb_topic": "RGB camera topic (empty: from config_file)",
    "device": "auto | cpu | cuda | cuda:N (empty: from config_file)",
    "weights": "DIFF-MF weights .safetensors (empty: from config_file)",
    "use_sim_time": "use /clock (bag replay): true | false",
    "namespace": "namespace of the node (empty: root); its relative topics follow it",
    "log_level": "node log level: debug | info | warn | error | fatal",
    "fused_topic": "output image topic (remaps fused/image and fused/image/compressed; relative names "
                   "stay in the namespace)",
    "info_topic": "output FusionInfo topic (remaps fused/info)",
}
DEFAULTS = {"use_sim_time": "false", "log_level": "info", "fused_topic": "fused/image", "info_topic": "fused/info"}
OVERRIDES = ("thermal_topic", "rgb_topic", "device", "weights")


def node_settings(args: dict, share_dir: str) -> dict:
    """Keyword arguments of launch_ros.actions.Node for resolved launch argument strings `args`."""
    config = args.get("config_file") or os.path.join(share_dir, "config", "fuse.yaml")
    overrides = {name: args[name] for name in OVERRIDES if args.get(name)}
    overrides["use_sim_time"] = str(args.get("use_sim_time", "false")).lower() == "true"
    fused = args.get("fused_topic") or DEFAULTS["fused_topic"]
    info = args.get("info_topic") or DEFAULTS["info_topic"]
    return {
        "package": PACKAGE,
        "executable": EXECUTABLE,
        "name": NODE_NAME,
        "namespace": args.get("namespace") or "",
        "output": "screen",
        "emulate_tty": True,
        "parameters": [config, overrides],
        "ros_arguments": ["--log-level", args.get("log_level") or DEFAULTS["log_level"]],
        "remappings": [
            ("fused/image", fused),
            ("fused/image/compressed", fused + "/compressed"),
            ("fused/info", info),
        ],
    }


def generate_launch_description():
    """The launch description: declared arguments and the node, resolved at launch time."""
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def start_node(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        return [Node(**node_settings(values, get_package_share_directory(PACKAGE)))]

    declared = [DeclareLaunchArgument(name, default_value=DEFAULTS.get(name, ""), description=text)
                for name, text in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=start_node)])
