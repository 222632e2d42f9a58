"""Runtime fixes, one module per patch (the contract: docs/architecture.md, "Adding a load-time patch"):

    TARGET = "exact.module.to.hook"
    DISTRIBUTION = "pip-distribution-name"
    AFFECTED = ">=x,<y"                 # versions with the bug; outside: skipped
    ATTRIBUTES = ("name", ...)          # module attributes apply() replaces
    FIXED_IN = "x.y"                    # optional: first upstream release with the fix
    def bug_present(module) -> str | None   # None: the bug is there; else why not
    def apply(module) -> None
    def revert(module) -> None

The registry below is explicit: a patch exists when it is listed here.
"""

PATCHES: tuple[str, ...] = ("mlx_load", "mlx_lm_config", "jang_quant_config", "jang_fp8",
                            "vllm_marlin")
