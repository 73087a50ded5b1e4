"""Start the diffmf_fusion node: `ros2 launch diffmf_ros fuse.launch.py device:=cuda namespace:=/uav1`.

The node is a managed (lifecycle) node, started as launch_ros' LifecycleNode. Launch arguments
(an empty value keeps the parameters file's setting):
  params_file    parameters YAML (default: the package's config/fuse.yaml); config_file: the same
                 (older name, used when params_file is empty)
  thermal_topic  thermal camera topic          rgb_topic  RGB camera topic
  fuser          warm_rule | diffmf | classical (the shipped config: warm_rule)
  device         auto | cpu | cuda | cuda:N    weights    the network's .safetensors (fuser:=diffmf)
  use_sim_time   true when replaying a bag with --clock
  namespace      the node's namespace (its relative topics follow it: /uav1/fused/image ...)
  autostart      true: configure and activate at start; false: wait for lifecycle transitions
                 (`ros2 lifecycle set /uav1/diffmf_fusion configure`, or a lifecycle manager)
  respawn        true: start the node again when its process ends (respawn_delay seconds later)
  log_level      debug | info | warn | error | fatal
  fused_topic    where fused/image goes, by remapping (its /compressed and the camera_info next
                 to it follow, as image_transport's)
  info_topic     where fused/info goes, by remapping
  fastdds_profile  Fast DDS XML profile for the node (large images over shared memory); default:
                 FASTDDS_DEFAULT_PROFILES_FILE if set, else the package's config/fastdds_profile.xml;
                 "none": leave the environment as it is

`node_settings()` is plain Python (no launch import) so tests can check what would be started.
"""
import os

PACKAGE = "diffmf_ros"
EXECUTABLE = "fusion_node"
NODE_NAME = "diffmf_fusion"
# launch argument -> description; parameter overrides use the same names.
ARGUMENTS = {
    "params_file": "parameters YAML (default: <package share>/config/fuse.yaml)",
    "config_file": "older name of params_file (used when params_file is empty)",
    "thermal_topic": "thermal camera topic (empty: from params_file)",
    "rgb_topic": "RGB camera topic (empty: from params_file)",
    "fuser": "warm_rule (the shipped default, no network) | diffmf (the network) | classical "
             "(empty: from params_file)",
    "device": "auto | cpu | cuda | cuda:N (empty: from params_file)",
    "weights": "DIFF-MF weights .safetensors, used with fuser diffmf (empty: from params_file)",
    "use_sim_time": "use /clock (bag replay): true | false",
    "namespace": "namespace of the node (empty: root); its relative topics follow it",
    "autostart": "true: configure and activate at start; false: wait for lifecycle transitions "
                 "(empty: from params_file, true in the shipped one)",
    "respawn": "true: start the node again when its process ends: true | false",
    "respawn_delay": "seconds before a respawn",
    "log_level": "node log level: debug | info | warn | error | fatal",
    "fused_topic": "output image topic (remaps fused/image, fused/image/compressed and the camera_info next to "
                   "it; relative names stay in the namespace)",
    "info_topic": "output FusionInfo topic (remaps fused/info)",
    "fastdds_profile": "Fast DDS profile XML for the node (empty: FASTDDS_DEFAULT_PROFILES_FILE if set, else "
                       "<package share>/config/fastdds_profile.xml; none: do not set)",
}
DEFAULTS = {"use_sim_time": "false", "log_level": "info", "fused_topic": "fused/image", "info_topic": "fused/info",
            "respawn": "false", "respawn_delay": "2.0"}
OVERRIDES = ("thermal_topic", "rgb_topic", "fuser", "device", "weights")
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def _true(value) -> bool:
    return str(value).strip().lower() == "true"


def node_settings(args: dict, share_dir: str, environ=None) -> dict:
    """Keyword arguments of launch_ros.actions.LifecycleNode for resolved launch argument strings
    `args` (missing names take their defaults); `environ` (default os.environ) decides the profile."""
    from diffmf_core.live.camera import camera_info_topic

    environ = os.environ if environ is None else environ
    config = (args.get("params_file") or args.get("config_file")
              or os.path.join(share_dir, "config", "fuse.yaml"))
    overrides = {name: args[name] for name in OVERRIDES if args.get(name)}
    overrides["use_sim_time"] = _true(args.get("use_sim_time", DEFAULTS["use_sim_time"]))
    if args.get("autostart"):
        overrides["autostart"] = _true(args["autostart"])
    fused = args.get("fused_topic") or DEFAULTS["fused_topic"]
    info = args.get("info_topic") or DEFAULTS["info_topic"]
    profile = args.get("fastdds_profile") or environ.get(PROFILE_VARIABLE) or os.path.join(
        share_dir, "config", "fastdds_profile.xml")
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
            ("fused/image/compressed", fused.rstrip("/") + "/compressed"),
            ("fused/camera_info", camera_info_topic(fused)),
            ("fused/info", info),
        ],
        "respawn": _true(args.get("respawn", DEFAULTS["respawn"])),
        "respawn_delay": float(args.get("respawn_delay") or DEFAULTS["respawn_delay"]),
        "additional_env": {} if profile.strip().lower() == "none" else {PROFILE_VARIABLE: profile},
    }


def generate_launch_description():
    """The launch description: declared arguments and the lifecycle node, resolved at launch time."""
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode

    def start_node(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        return [LifecycleNode(**node_settings(values, get_package_share_directory(PACKAGE)))]

    declared = [DeclareLaunchArgument(name, default_value=DEFAULTS.get(name, ""), description=text)
                for name, text in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=start_node)])
