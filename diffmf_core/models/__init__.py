"""Networks built from diffmf_core.modules."""
from diffmf_core.models.diffmf import DiffMF

__all__ = ["DiffMF"]
