"""Replace one attribute with a wrapper, once, and put the exact original back: the
mechanics every patch shares (idempotent apply, exact revert, only if ours)."""

from __future__ import annotations

import functools

MARK = "__scalefix_patch__"


def is_ours(obj) -> bool:
    return bool(getattr(obj, MARK, False))


def wrap(owner, attr: str, make_wrapper) -> None:
    """``owner.attr = make_wrapper(original)`` unless it already is one of ours."""
    original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
    if is_ours(original):
        return
    wrapper = functools.wraps(original)(make_wrapper(original))
    setattr(wrapper, MARK, True)
    wrapper.__wrapped__ = original
    setattr(owner, attr, wrapper)


def unwrap(owner, attr: str) -> None:
    """Restore the exact original object, only if the current attribute is ours."""
    current = (owner.__dict__.get(attr) if isinstance(owner, type)
               else getattr(owner, attr, None))
    if is_ours(current):
        setattr(owner, attr, current.__wrapped__)
