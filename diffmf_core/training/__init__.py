"""Training and evaluation of the network: the pair data sets (data), the paper's loss and the
differentiable score (losses), the paper's six metrics (metrics), the training loop with
validation and safetensors checkpoints (train), and the metric tables, contact sheets and video
flicker of ``diffmf eval`` (evaluation). Imports the network, its weights, the classical baselines
and common/; never the live path or the command-line tools, which drive it from tools/."""
