"""MLX knowledge shared by the runtime hooks and ``rewrite --to mlx`` / ``--to mlx-affine``.

Every module here imports ``mlx`` (or ``mlx_lm``) only where it needs it: importing the package
itself stays cheap, so ``import scalefix.auto`` never pays for MLX.
"""
