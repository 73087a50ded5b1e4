"""The per-pair live path, shared by the ROS node and ``diffmf bag fuse``: decode (imagecodec, agc),
pair (sync), undistort (camera), register (registration), fuse (pipeline), and the node's settings
and per-frame routine (settings, frames). Uses the network through ``diffmf_core.fuser``; never
imports rclpy or the command-line tools."""
