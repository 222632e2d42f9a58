"""``import scalefix.auto``: arm every runtime fix. Cheap: nothing heavy is imported until
the application imports the patched library. Off switch: ``SCALEFIX_DISABLE=1``."""

from .hooks.registry import arm_all as _arm_all

_arm_all()
