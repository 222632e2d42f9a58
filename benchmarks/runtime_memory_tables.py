"""``runtime_memory.py``'s results as markdown, and its acceptance bars: the tables it prints
and writes into docs/benchmarks.md (``--write-docs``). Reads the summary dict only."""

from __future__ import annotations

BARS = {"peak": 1.2, "load": 1.1}  # scalefix / plain: peak RSS, DeepSeek-V3 load + forward


def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def who_label(name: str, plain_what: str) -> str:
    if name == "plain":
        return plain_what
    return "scalefix.auto (working tree)" if name == "scalefix" else f"scalefix.auto ({name.split('@')[-1]})"


def convert_rows(model: str, pair: dict, plain_what: str, plain_input: str) -> list[str]:
    out = []
    for name, r in pair["results"].items():
        who = who_label(name, plain_what)
        what = plain_input if name == "plain" else "FP8"
        if r.get("status") != "ok":
            err = (r.get("error") or "").strip().splitlines() or [""]
            out.append(f"| {model} | {who} | {what} | {r.get('status')} | | | | {err[-1][:100]} |")
            continue
        ratio, o = r.get("ratio") or {}, r.get("outputs_vs_plain")
        rp = f" ({ratio['peak_rss_mb']:.2f}x)" if "peak_rss_mb" in ratio else ""
        rw = f" ({ratio['wall_s']:.2f}x)" if "wall_s" in ratio else ""
        cell = "" if o is None else (f"bit-identical to plain ({o['tensors']} tensors)" if o["identical"]
                                     else f"DIFFERS from plain: {o['n_differing']} of {o['tensors']}")
        out.append(f"| {model} | {who} | {what} | {r['peak_rss_mb']:.0f}{rp} | {r['wall_s']:.1f}{rw} | "
                   f"{fmt(r.get('load_s'))} | {r['cpu_s']:.1f} | {cell} |")
    return out


def tables(s: dict) -> str:
    v = s["versions"]
    head = (f"{s['date']}, {s['machine']}, mlx {v['mlx']}, mlx-lm {v['mlx-lm']}, scalefix {v['scalefix_commit']}"
            f"{' + uncommitted scalefix/ changes' if v['scalefix_uncommitted'] else ''}"
            f" (tree {s['contenders'][1].get('tree_digest', '?')})"
            f"{'; ' + s['label'] if s.get('label') else ''}; page cache {s['page_cache']}")
    lines = [f"### mlx-lm {s['q_bits']}-bit (group {s['q_group_size']}) conversion ({head})", "",
             "| model (FP8 size) | contender | input | peak RSS MB (/ plain) | wall s (/ plain) | load s | CPU s "
             "| 4-bit output |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for c in s["llama"]:
        lines += convert_rows(f"Llama {c['info']['bytes'] / 1e9:.2f} GB", c, "plain mlx-lm",
                              f"BF16 twin {c['info']['twin_bytes'] / 1e9:.2f} GB")
    if s.get("dsv3"):
        lines += convert_rows(f"DeepSeek-V3 {s['dsv3']['info']['bytes'] / 1e9:.2f} GB", s["dsv3"]["convert"],
                              "plain mlx-lm (own FP8 path)", "FP8")
    if len(s["llama"]) >= 2:
        a, b = s["llama"][0], s["llama"][1]
        grow = [f"{n} {b['results'][n]['peak_rss_mb'] - a['results'][n]['peak_rss_mb']:+.0f} MB"
                for n in a["results"] if a["results"][n].get("status") == b["results"][n].get("status") == "ok"]
        lines += ["", f"From {a['info']['bytes'] / 1e9:.2f} to {b['info']['bytes'] / 1e9:.2f} GB of FP8, "
                      f"peak RSS grows by: {', '.join(grow)}."]
    ld = (s.get("dsv3") or {}).get("load")
    if ld:
        lines += ["", f"### DeepSeek-V3 {s['dsv3']['info']['bytes'] / 1e9:.2f} GB: `mlx_lm.load` + first forward "
                      f"(8 tokens), median of {s['load_repeat']}, interleaved", "",
                  "| contender | load + forward s (/ plain) | all runs | load s | forward s | CPU s (/ plain) "
                  "| peak RSS MB (/ plain) | logits |", "|---|---:|---|---:|---:|---:|---:|---|"]
        for name, m in ld["summary"].items():
            who = who_label(name, "plain mlx-lm (own FP8 path)")
            if m.get("status") != "ok":
                lines.append(f"| {who} | failed | | | | | | |")
                continue
            ratio = m.get("ratio") or {}
            rl = f" ({ratio['load_forward_s']:.2f}x)" if ratio else ""
            rp = f" ({ratio['peak_rss_mb']:.2f}x)" if ratio else ""
            rc = f" ({ratio['cpu_s']:.2f}x)" if ratio.get("cpu_s") else ""
            same = {True: "bit-identical to plain", False: "DIFFER from plain", None: "-"}[
                m.get("logits_identical_to_plain")] if name != "plain" else ""
            lines.append(f"| {who} | {m['load_forward_s_median']:.2f}{rl} | "
                         f"{', '.join(f'{x:.2f}' for x in m['load_forward_s_all'])} | {m['load_s_median']:.2f} | "
                         f"{m['forward_s_median']:.2f} | {fmt(m.get('cpu_s_median'), 1)}{rc} | "
                         f"{m['peak_rss_mb']:.0f}{rp} | {same} |")
    lines += ["", "| acceptance bar | contender | scalefix / plain | limit | met |", "|---|---|---:|---:|---|"]
    for b in s["bars"]:
        lines.append(f"| {b['bar']} | {b['contender']} | {fmt(b['value'])}x | {b['limit']}x | "
                     f"{'yes' if b['ok'] else 'NO'} |")
    return "\n".join(lines)


def bars(s: dict) -> list[dict]:
    """The issue's bars, for every scalefix contender (the working tree's decides the exit code)."""
    out = []
    names = [n for n in (s["llama"] or [s["dsv3"]["convert"]])[0]["results"] if n != "plain"] \
        if (s["llama"] or s["dsv3"]) else []
    for name in names:
        for c in s["llama"]:
            out.append({"bar": f"peak, Llama {c['size_gb']:g} GB", "contender": name, "limit": BARS["peak"],
                        "value": (c["results"][name].get("ratio") or {}).get("peak_rss_mb")})
        if s["dsv3"]:
            size = f"{s['dsv3']['size_gb']:g} GB"
            out.append({"bar": f"peak, DeepSeek-V3 {size} convert", "contender": name, "limit": BARS["peak"],
                        "value": (s["dsv3"]["convert"]["results"][name].get("ratio") or {}).get("peak_rss_mb")})
            if s["dsv3"]["load"]:
                m = s["dsv3"]["load"]["summary"][name]
                out.append({"bar": f"load + forward, DeepSeek-V3 {size}", "contender": name,
                            "limit": BARS["load"], "value": (m.get("ratio") or {}).get("load_forward_s")})
    for b in out:
        b["ok"] = b["value"] is not None and b["value"] <= b["limit"]
    return out
