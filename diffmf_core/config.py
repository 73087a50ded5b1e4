"""One config object per DIFF-MF network: every size, switch and ablation of the paper.

``DiffMFConfig`` builds the whole network (``diffmf_core.models.DiffMF(cfg)``) and is stored in the
metadata of every weights file, so a weights file alone rebuilds its network.

Ablation switches (paper Tables II-VI):
- ``feature_extraction=False``      Table II "w/o feature extract" (embedding straight into fusion)
- ``channel_exchange=False``        Table II "w/o channel-exchange"
- ``spatial_exchange="average"``    Table II "w/o spatial-exchange" (replaced by averaging)
- ``guidance="none"``               Table II "w/o difference guidance" (shared features added back)
- ``guidance="v1"`` / ``"v2"``      Table III: visible re-weighted first / both in parallel
- ``ssd_exchange="v1"|"v2"|"none"`` Table V (Eq. 15 / Eq. 16) and Table IV "w/o SSD exchange"
- ``channel_reweighting=False``     Table IV "w/o channel reweighting"
- ``reweight_residual=False``       Table VI (Eq. 7 without the alpha/beta residual)
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

GUIDANCE_MODES = ("paper", "v1", "v2", "none")
SSD_EXCHANGE_MODES = ("paper", "v1", "v2", "none")
SPATIAL_MODES = ("paper", "average")
SCAN_BACKENDS = ("auto", "chunked", "mamba_ssm", "naive")
HEAD_REGIONS = ("everywhere", "warm")
HEAD_MAPS = ("all", "selection")


@dataclass(frozen=True)
class DiffMFConfig:
    """Sizes and switches of one DIFF-MF network (see module docstring for the ablations)."""

    name: str = "paper"
    embed_dim: int = 32            # C, channels of every feature map (paper: 32)
    patch_size: int = 1            # stride of the embedding; >1 runs the SSMs on a coarser grid
    extraction_depth: int = 2      # N repeats of Algorithm 1
    d_state: int = 16              # SSM state size N (paper: 16)
    expand: int = 2                # SSM inner width = expand * C
    head_dim: int = 16             # SSD head width P (heads share one scalar decay each)
    chunk_size: int = 64           # SSD chunk length Q of the portable scan
    conv_kernel: int = 3           # depth-wise conv inside every VSS block
    mlp_ratio: float = 2.0         # VSS block feed-forward width (0 disables the FFN)
    spatial_levels: int = 3        # high / middle / low scales of the spatial-exchange module
    pyramid_levels: int = 5        # Laplacian pyramid levels of the decoder (detail bands + base)
    scan_backend: str = "auto"     # auto: mamba_ssm on CUDA when importable, else chunked
    mixer: str = "ssm"             # "attention" replaces every VSS mixer (Table VII FLOPs study)
    attention_heads: int = 16      # heads of that attention mixer (paper: 16)
    # decoder (modules.pyramid_decoder; none of these changes the parameters)
    output_stretch: float = 1.0    # s of f' = m + s (f - m) on the whole output, the rule's too
    head_region: str = "everywhere"  # "warm": the head departs from the rule only near warm structures
    warm_margin: int = 8           # pixels around a warm structure that count as near it
    head_maps: str = "all"         # "selection": the head sets only the selections (gains, contrast: the rule's)
    # ablations / variants
    feature_extraction: bool = True
    guidance: str = "paper"
    channel_exchange: bool = True
    ssd_exchange: str = "paper"
    channel_reweighting: bool = True
    reweight_residual: bool = True
    spatial_exchange: str = "paper"
    extra: dict = field(default_factory=dict)  # free-form notes kept with the weights

    def __post_init__(self) -> None:
        checks = [
            (self.embed_dim > 0 and self.embed_dim % 2 == 0, "embed_dim must be a positive even number"),
            (self.patch_size in (1, 2, 4, 8), "patch_size must be 1, 2, 4 or 8"),
            (self.extraction_depth >= 1, "extraction_depth must be >= 1"),
            (self.d_state >= 1, "d_state must be >= 1"),
            ((self.expand * self.embed_dim) % self.head_dim == 0, "expand*embed_dim must be a multiple of head_dim"),
            (self.chunk_size >= 8, "chunk_size must be >= 8"),
            (self.spatial_levels in (1, 2, 3), "spatial_levels must be 1, 2 or 3"),
            (2 <= self.pyramid_levels <= 8, "pyramid_levels must be 2..8"),
            (self.mixer in ("ssm", "attention"), "mixer must be 'ssm' or 'attention'"),
            (self.scan_backend in SCAN_BACKENDS, f"scan_backend must be one of {SCAN_BACKENDS}"),
            (self.guidance in GUIDANCE_MODES, f"guidance must be one of {GUIDANCE_MODES}"),
            (self.ssd_exchange in SSD_EXCHANGE_MODES, f"ssd_exchange must be one of {SSD_EXCHANGE_MODES}"),
            (self.spatial_exchange in SPATIAL_MODES, f"spatial_exchange must be one of {SPATIAL_MODES}"),
            (1.0 <= self.output_stretch <= 2.0, "output_stretch must be in [1, 2]"),
            (self.head_region in HEAD_REGIONS, f"head_region must be one of {HEAD_REGIONS}"),
            (0 <= self.warm_margin <= 64 and self.warm_margin % 4 == 0, "warm_margin must be a multiple of 4 in 0..64"),
            (self.head_maps in HEAD_MAPS, f"head_maps must be one of {HEAD_MAPS}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"DiffMFConfig: {message}")

    @property
    def multiple(self) -> int:
        """Input sizes are padded to a multiple of this (patch size times the pyramid factor)."""
        return self.patch_size * 2 ** (self.spatial_levels - 1)

    def replace(self, **changes) -> "DiffMFConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DiffMFConfig":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"DiffMFConfig: unknown fields {sorted(unknown)}")
        return cls(**data)


PRESETS: dict[str, DiffMFConfig] = {
    # The paper's network: embed dim 32, N = 16, SSMs at full resolution.
    "paper": DiffMFConfig(name="paper"),
    # Live use on CPUs and small GPUs: same modules and order, SSMs on an 8x coarser grid
    # (the decoder's Laplacian pyramid of the sources keeps full-resolution texture), fewer channels.
    "live": DiffMFConfig(
        name="live", embed_dim=16, patch_size=8, chunk_size=16, extraction_depth=1, d_state=8, expand=1,
        head_dim=8, mlp_ratio=0.0,
    ),
}


def get_preset(name: str, **overrides) -> DiffMFConfig:
    """A named preset, optionally with fields overridden (e.g. an ablation switch)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
