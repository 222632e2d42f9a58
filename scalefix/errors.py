"""The one exception type users see: a clear line naming the file and the tensor."""

from __future__ import annotations


class ScalefixError(Exception):
    """Bad input. The CLI prints ``str(err)`` as one line and exits 2 (no traceback)."""

    def __init__(self, message: str, *, file: object = None, tensor: str | None = None):
        self.file = str(file) if file is not None else None
        self.tensor = tensor
        self.detail = message
        parts = [p for p in (self.file, f"tensor {tensor!r}" if tensor else None) if p]
        super().__init__(": ".join(parts + [message]))
