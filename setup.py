"""pip packaging for the Python side of diffmf (``pip install -e .`` in the dev venv).

Gives the ``diffmf_core`` and ``diffmf_ros`` packages and the console scripts. The ROS message
Python code (``diffmf_ros.msg``) is not built here: it comes from rosidl (scripts/build_msgs.sh
in the dev venv, CMakeLists.txt under colcon). rclpy and the ROS wheels are not listed: they come
from the venv's requirements.txt or from a ROS 2 installation.
"""
from setuptools import find_packages, setup

setup(
    name="diffmf",
    version="0.1.0",
    description="DIFF-MF infrared-visible image fusion with a live ROS 2 node",
    python_requires=">=3.10",
    packages=find_packages(include=["diffmf_core", "diffmf_core.*", "diffmf_ros", "diffmf_ros.*"]),
    package_data={"diffmf_core": ["weights/*.safetensors"]},
    include_package_data=False,
    install_requires=[
        "numpy>=1.26",
        "opencv-python-headless>=4.9",
        "torch",
        "safetensors>=0.4",
        "tqdm>=4.66",
        "PyYAML>=6.0",
        "rosbags>=0.10",
    ],
    entry_points={
        "console_scripts": [
            "diffmf=diffmf_core.cli:main",
            "diffmf-fusion-node=diffmf_ros.fusion_node:main",
            "diffmf-bag-player=diffmf_ros.player:main",
            "diffmf-bag-recorder=diffmf_ros.recorder:main",
        ],
    },
)
