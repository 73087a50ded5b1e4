"""diffmf_ros: ROS 2 glue over diffmf_core (fusion node, bag player/recorder) + FusionInfo msg.

Contract: ``from diffmf_ros.msg import FusionInfo`` and ``import diffmf_ros.fusion_node`` both
work in a colcon install and in the dev venv.

Why ``__path__`` is extended here: rosidl generates a Python package with the same name as the
ROS package (``diffmf_ros/msg/...`` plus ``diffmf_ros/diffmf_ros_s__rosidl_typesupport_c*.so``,
which ``msg`` imports as ``diffmf_ros.<module>``). The two halves can live in different folders:

* colcon install: CMakeLists.txt installs these sources into the generated folder, so there is
  one folder and the extension below finds nothing more to add;
* dev venv (scripts/setup_env.sh): the generated half is installed into the venv's
  site-packages *without* its (empty) ``__init__.py``, and these sources are pip-editable. Python
  prefers a regular package (this one) over a folder without ``__init__.py`` wherever they are on
  ``sys.path``, so the checkout's code always loads and stays editable; ``extend_path`` then
  appends every other ``diffmf_ros`` folder on ``sys.path`` (the generated one) to ``__path__``,
  which makes ``diffmf_ros.msg`` and the typesupport modules importable.

Kept deliberately import-light: no rclpy/torch imports here.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
