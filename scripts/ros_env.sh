# shellcheck shell=bash
# Run-time ROS 2 environment for this checkout. Source it (scripts and tests do):
#     source scripts/ros_env.sh
# Sets, for the current shell only (nothing permanent):
#   FASTDDS_DEFAULT_PROFILES_FILE  config/fastdds_profile.xml (16 MB SHM + UDPv4, see README)
#   ROS_AUTOMATIC_DISCOVERY_RANGE  LOCALHOST unless already set (this release ignores ROS_LOCALHOST_ONLY)
#   RMW_IMPLEMENTATION             rmw_fastrtps_cpp (the profile is a Fast DDS one)
#   AMENT_PREFIX_PATH              prepends the venv (ament_index finds the wheels' packages and,
#                                  after `make setup`, this package's launch files there)
#   PATH                           prepends the venv's bin/ (`ros2`, `launch_test`, `diffmf`)
# Existing values of ROS_AUTOMATIC_DISCOVERY_RANGE and RMW_IMPLEMENTATION are kept.
_diffmf_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_diffmf_venv="${DIFFMF_VENV:-$_diffmf_root/.venv}"

export FASTDDS_DEFAULT_PROFILES_FILE="$_diffmf_root/config/fastdds_profile.xml"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
if [ -d "$_diffmf_venv" ]; then
  case ":${AMENT_PREFIX_PATH:-}:" in
    *":$_diffmf_venv:"*) ;;
    *) export AMENT_PREFIX_PATH="$_diffmf_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
  esac
  case ":${PATH:-}:" in
    *":$_diffmf_venv/bin:"*) ;;
    *) export PATH="$_diffmf_venv/bin${PATH:+:$PATH}" ;;
  esac
fi
unset _diffmf_root _diffmf_venv
