"""Offline fixes: plan -> stream shards -> config -> index (``rewrite``), and ``verify``."""
