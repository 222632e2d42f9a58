"""What the ``mx.load`` hook did to each file this process loaded, and the one place that
says so when it could not help: never a silent fallback.

A file of a quantized checkpoint the hook cannot fix gets one line on stderr (once per file:
the file, the reason, what the caller receives instead) and is counted with its reason in
``scalefix.status()``. ``SCALEFIX_STRICT=1`` raises ``UnfixedCheckpointError`` instead, for
pipelines that must not run on garbage.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field

from ..errors import ScalefixError

WHAT_CALLER_GETS = "you get what plain mx.load returns (quantized weights without their scales)"


class Unfixable(Exception):
    """A file of a quantized checkpoint the hook cannot fix; ``str()`` says why."""


class UnfixedCheckpointError(ScalefixError):
    """Raised into the host under ``SCALEFIX_STRICT=1`` instead of returning raw codes."""


def strict() -> bool:
    return os.environ.get("SCALEFIX_STRICT", "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class LoadReport:
    fixed: set[str] = field(default_factory=set)
    passed: set[str] = field(default_factory=set)     # nothing to fix: the original result
    unfixed: dict[str, str] = field(default_factory=dict)  # file -> why
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    patch: str = "mlx_load"                # who says it, and what the caller gets instead
    caller_gets: str = WHAT_CALLER_GETS

    def record(self, path, outcome: str) -> None:
        with self._lock:
            (self.fixed if outcome == "fixed" else self.passed).add(str(path))

    def cannot_fix(self, path, reason: str) -> None:
        """Say it once per file, count it; under SCALEFIX_STRICT=1 raise instead."""
        path = str(path)
        if strict():
            raise UnfixedCheckpointError(
                f"scalefix cannot apply the scales ({reason}); refusing to return raw "
                "quantized values because SCALEFIX_STRICT is set", file=path)
        with self._lock:
            first = path not in self.unfixed
            self.unfixed[path] = reason
        if first:
            print(f"scalefix: {self.patch}: {path}: cannot apply the scales ({reason}); "
                  f"{self.caller_gets}. SCALEFIX_STRICT=1 makes this an error.",
                  file=sys.stderr)

    def summary(self) -> dict:
        with self._lock:
            return {"fixed": len(self.fixed), "passed_through": len(self.passed),
                    "unfixed": len(self.unfixed), "unfixed_reasons": dict(self.unfixed)}

    def clear(self) -> None:
        with self._lock:
            self.fixed.clear()
            self.passed.clear()
            self.unfixed.clear()


REPORT = LoadReport()
