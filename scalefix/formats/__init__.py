"""Everything scalefix knows about checkpoint formats, and nothing else.

Importing this package is cheap (no numpy): header, bundle and classification are pure
Python; ``codecs``/``dequant``/``tensor_data`` import numpy when you import them.
"""

from .bundle import Bundle, open_bundle
from .classify import Classification, Finding, QuantizedWeight, classify
from .header import Header, TensorInfo, read_header

__all__ = ["Bundle", "Classification", "Finding", "Header", "QuantizedWeight", "TensorInfo",
           "classify", "open_bundle", "read_header"]
