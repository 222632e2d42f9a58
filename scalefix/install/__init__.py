"""Permanent source fixes of installed apps (``scalefix patch-install``)."""
