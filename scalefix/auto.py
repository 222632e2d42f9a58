"""``import scalefix.auto``: arm every runtime fix. Cheap enough for every interpreter
(sitecustomize, ``.pth``): a few ms, stdlib only; wrapt, MLX and the patch modules are
imported when the application imports a patched library (``hooks/import_watch.py`` says
why and how). Off switch: ``SCALEFIX_DISABLE=1`` (then nothing is armed at all)."""

from .hooks.registry import arm_all as _arm_all

_arm_all()
