"""auto-round (installed with llmcompressor) RTN, iters=0, data-free: the GPTQ v1
(``auto_gptq``: qweight packed along the input, qzeros storing z - 1, g_idx) and AutoAWQ
GEMM (``auto_awq``) layouts, written by auto-round's own packers.

usage: python write_auto_round.py SRC DST auto_gptq|auto_awq sym|asym GROUP"""

import shutil
import sys
from pathlib import Path

from auto_round import AutoRound

src, dst, fmt, sym, group = sys.argv[1:6]
tmp = Path(dst + ".ar")
AutoRound(model=src, scheme="W4A16", iters=0, group_size=int(group), sym=sym == "sym",
          device_map="cpu", disable_opt_rtn=True).quantize_and_save(str(tmp), format=fmt)
(out,) = [p for p in tmp.iterdir() if p.is_dir()]  # auto-round adds a subfolder
out.rename(dst)
shutil.rmtree(tmp)
