"""``scalefix verify``: proof that a converted checkpoint matches its quantized source. Its
own room: it decodes through ``scalefix.formats`` and imports nothing from ``rewrite``, so a
bug in the writer cannot hide itself from the check."""
