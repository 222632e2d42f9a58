"""``verify --plot``: SQNR per tensor in layer order, so a broken layer stands out."""

from __future__ import annotations

from ..errors import ScalefixError

EXACT_DB = 160.0  # where byte-identical copies (no SQNR) are drawn


def plot(report: dict, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ScalefixError("--plot needs matplotlib: pip install matplotlib") from None
    rows = sorted(report["tensors"], key=lambda t: (t["layer"] if t["layer"] is not None
                                                    else -1, t["tensor"]))
    ys = [t["sqnr_db"] if t.get("sqnr_db") is not None else
          (EXACT_DB if t.get("bit_exact") else -20.0) for t in rows]
    colors = ["tab:green" if t.get("bit_exact") else ("tab:blue" if t["ok"] else "tab:red")
              for t in rows]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) / 12), 4.5))
    ax.scatter(range(len(rows)), ys, c=colors, s=12)
    ax.axhline(report["min_sqnr_db"], color="tab:red", linestyle="--", linewidth=1,
               label=f"pass threshold {report['min_sqnr_db']} dB")
    boundaries = [i for i in range(1, len(rows)) if rows[i]["layer"] != rows[i - 1]["layer"]]
    for b in boundaries:
        ax.axvline(b - 0.5, color="0.85", linewidth=0.8)
    ax.set_xlabel("tensor (grouped by layer)")
    ax.set_ylabel("SQNR vs float32 truth, dB")
    ax.set_title(f"scalefix verify: {len(report['failed'])} failed of {report['compared']}")
    ax.scatter([], [], c="tab:green", s=12, label="bit-exact")
    ax.scatter([], [], c="tab:red", s=12, label="failed")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
