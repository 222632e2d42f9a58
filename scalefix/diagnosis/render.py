"""The human-readable form of an inspect report: one screen, most important last."""

from __future__ import annotations

SHOW = 3  # examples listed per category


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _listing(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    lines = [f"{title}: {len(items)}"]
    lines += [f"  {item}" for item in items[:SHOW]]
    if len(items) > SHOW:
        lines.append(f"  ... and {len(items) - SHOW} more (--json lists all)")
    return lines


def render(report: dict) -> str:
    size = sum(s["bytes"] for s in report["shards"])
    lines = [f"{report['path']}: {report['kind']}, {len(report['shards'])} shard(s), "
             f"{report['tensors']} tensors, {_human_bytes(size)}",
             "dtypes: " + ", ".join(f"{k} {v}" for k, v in report["dtypes"].items())]
    cfg = report["config"]
    if cfg["where"]:
        summary = " ".join(f"{k}={v}" for k, v in cfg["summary"].items() if k != "config_groups")
        lines.append(f"config: {cfg['where']}: {summary}")
        for group in cfg["summary"].get("config_groups", []):
            lines.append("  group " + " ".join(f"{k}={v}" for k, v in group.items()
                                               if v is not None))
        if cfg["ignore"]:
            lines.append(f"  ignore list: {', '.join(cfg['ignore'][:6])}"
                         + (" ..." if len(cfg["ignore"]) > 6 else ""))
    else:
        lines.append("config: no quantization config found")
    declared = report["declared"]
    if declared["layers"]:
        lines.append("declared per layer: " + ", ".join(
            f"{fmt} x{count}" for fmt, count in declared["layers"].items()))
    if report["groups"]:
        lines.append(f"quantized weights: {len(report['quantized'])}")
        header = ("scheme", "naming", "weight", "block", "scale", "count", "example")
        rows = [header] + [(g["scheme"], g["naming"], g["weight_dtype"],
                            "x".join(map(str, g["block"])), g["scale_dtype"], str(g["count"]),
                            g["example"]) for g in report["groups"]]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        for row in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    lines += _listing("cross-shard pairs (scale in another shard)",
                      [f"{p['weight']} ({p['weight_file']}) <- {p['scale']} ({p['scale_file']})"
                       for p in report["cross_shard_pairs"]])
    lines += _listing("activation scales (dropped on rewrite)", report["activation_scales"])
    lines += _listing("quantization markers", report["markers"])
    lines += _listing("orphan scales", [f"{o['scale']}: {o['reason']}"
                                        for o in report["orphan_scales"]])
    lines += _listing("FP8 weights without scale", report["fp8_without_scale"])
    lines += _listing("unsupported", [f"{u['tensor']}: {u['reason']}"
                                      for u in report["unsupported"]])
    lines += _listing("float weights holding raw FP8 values",
                      [f"{e['tensor']} {e['dtype']}: {e['signature']}, max |w| = "
                       f"{e['max_abs']:g}" for e in report["converted_without_scales"]])
    for finding in report["findings"]:
        lines.append(f"[{finding['severity']}] {finding['message']}")
    verdict = report["verdict"]
    lines.append(f"verdict: {verdict['status'].upper()}: {verdict['message']}")
    if verdict["fix"]:
        lines.append(f"fix: {verdict['fix']}")
    return "\n".join(lines)
