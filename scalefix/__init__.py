"""scalefix: find and fix quantized checkpoints whose scales loaders silently drop."""

__version__ = "0.1.0"

__all__ = ["patch_all", "unpatch_all", "status"]


def patch_all() -> list[dict]:
    """Arm every runtime fix and apply those whose target is already imported."""
    from .hooks.registry import patch_all as _patch_all
    return _patch_all()


def unpatch_all() -> list[dict]:
    """Revert every applied runtime fix (restores the exact original objects)."""
    from .hooks.registry import unpatch_all as _unpatch_all
    return _unpatch_all()


def status() -> list[dict]:
    """Each runtime fix: armed / applied / skipped (why) / failed (error), with versions."""
    from .hooks.registry import status_table
    return status_table()
