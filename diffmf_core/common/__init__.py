"""Leaf helpers shared by every layer: argparse types and help text (argtypes), colour conversion
and colour fusion around a grey fuser (color), the output policy of every command that writes
(outputs), and where the repository, shared data and shipped weights are (paths). They import
nothing else of diffmf_core."""
