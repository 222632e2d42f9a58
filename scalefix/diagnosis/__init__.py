"""``scalefix inspect``: a read-only diagnosis of a checkpoint (headers, scales, samples)."""

from .report import REPORT_VERSION, build_report

__all__ = ["REPORT_VERSION", "build_report"]
