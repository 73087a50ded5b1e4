"""Blocks of DIFF-MF: the VSS block and the three modules of the paper (built on diffmf_core.ops)."""
