"""Low-level operators: the selective scan and the 2-D cross-scan / cross-merge."""
from diffmf_core.ops.cross_scan import cross_merge, cross_scan
from diffmf_core.ops.scan import resolve_backend, selective_scan, selective_scan_chunked, selective_scan_naive

__all__ = ["cross_merge", "cross_scan", "resolve_backend", "selective_scan", "selective_scan_chunked",
           "selective_scan_naive"]
