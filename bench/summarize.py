#!/usr/bin/env python3
"""Summarize bench/compare-etcd.sh runs: medians over rounds, ratios, the issue's targets.

Usage: summarize.py RUNS.jsonl OUT_DIR "COMMAND"
Writes OUT_DIR/compare-etcd.md, throughput.svg and latency-p99.svg (plain SVG, no libraries).
"""
import json
import re
import statistics
import sys
from collections import defaultdict

runs_path, out_dir, command = sys.argv[1], sys.argv[2], sys.argv[3]
runs = [json.loads(line) for line in open(runs_path) if line.strip()]
by = defaultdict(list)
rss = defaultdict(list)
rss_node = defaultdict(list)
rss_keys = None
commands = {}
for r in runs:
    if r["case"] == "rss":
        rss[r["system"]].append(r["rss_kib"])
        continue
    if r["case"] == "rss-node":
        rss_node[r["system"]].extend(r["rss_kib"])
        rss_keys = r["keys"]
        continue
    by[(r["system"], r["case"])].append(r["report"])
    # Ports are picked per run; show the endpoints as a placeholder.
    commands[r["case"]] = re.sub(r"--endpoints \S+", "--endpoints $ENDPOINTS", r["command"])

cases = sorted({c for (_, c) in by}, key=lambda c: (not c.startswith("put"), c))


def med(system, case, f):
    reps = by.get((system, case), [])
    return statistics.median(f(x) for x in reps) if reps else None


def tput(s, c):
    return med(s, c, lambda r: r["throughput_ops_s"])


def lat(s, c, p):
    return med(s, c, lambda r: r["latency_ms"][p])


def errors(s):
    return sum(r["errors"] for (sys_, _), reps in by.items() if sys_ == s for r in reps)


def lost(s):
    return sum(r.get("lost_keys") or 0 for (sys_, _), reps in by.items() if sys_ == s for r in reps)


def fmt(x, d=0):
    return "–" if x is None else f"{x:,.{d}f}"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


rounds = max((r["round"] for r in runs), default=0)
lines = [
    "# RingKV vs etcd, side by side",
    "",
    f"Command: `{command}` ({rounds} rounds, alternating etcd / RingKV; medians over rounds).",
    "Same machine (2 cores), 3 nodes each on loopback, data on disk, fsync on; load generator",
    "`ringkv bench` for both (`--target etcd` speaks etcd's v3 KV API). Latency in ms.",
    "",
    "| case | etcd ops/s | RingKV ops/s | RingKV/etcd | etcd p50 | RingKV p50 | etcd p99 | RingKV p99 |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]
for c in cases:
    te, tr = tput("etcd", c), tput("ringkv", c)
    lines.append(
        f"| {c} | {fmt(te)} | {fmt(tr)} | {fmt(ratio(tr, te), 2)}× | {fmt(lat('etcd', c, 'p50'), 2)} | "
        f"{fmt(lat('ringkv', c, 'p50'), 2)} | {fmt(lat('etcd', c, 'p99'), 1)} | {fmt(lat('ringkv', c, 'p99'), 1)} |"
    )
n = next((c.split("-")[1] for c in cases if c.startswith("put-") and c != "put-1"), "256")
re_, rr = (statistics.median(rss[s]) / 1024 if rss.get(s) else None for s in ("etcd", "ringkv"))

def per_node(system):
    """Mean, smallest and largest resident MiB per node after the big load."""
    v = rss_node.get(system)
    return (statistics.mean(v) / 1024, min(v) / 1024, max(v) / 1024) if v else (None, None, None)


(rn_e, lo_e, hi_e), (rn_r, lo_r, hi_r) = per_node("etcd"), per_node("ringkv")
zipf_drop = ratio(tput("ringkv", f"put-{n}-zipf"), tput("ringkv", f"put-{n}"))


def verdict(ok):
    return "–" if ok is None else ("met" if ok else "**not met**")


def ge(a, b):
    return None if a is None or b is None else a >= b


def le(a, b):
    return None if a is None or b is None else a <= b


put_ratio = ratio(tput("ringkv", f"put-{n}"), tput("etcd", f"put-{n}"))
get_ratio = ratio(tput("ringkv", f"get-{n}"), tput("etcd", f"get-{n}"))
lines += [
    "",
    "| target | measured | verdict |",
    "|---|---|---|",
    f"| put, {n} clients: ≥ 1.5× etcd throughput | {fmt(put_ratio, 2)}× | {verdict(ge(put_ratio, 1.5))} |",
    f"| put, {n} clients: p99 ≤ etcd's | {fmt(lat('ringkv', f'put-{n}', 'p99'), 1)} vs {fmt(lat('etcd', f'put-{n}', 'p99'), 1)} ms | "
    f"{verdict(le(lat('ringkv', f'put-{n}', 'p99'), lat('etcd', f'put-{n}', 'p99')))} |",
    f"| linearizable get, {n} clients: ≥ 2× etcd | {fmt(get_ratio, 2)}× | {verdict(ge(get_ratio, 2.0))} |",
    f"| put, 1 client: p50 ≤ etcd's | {fmt(lat('ringkv', 'put-1', 'p50'), 2)} vs {fmt(lat('etcd', 'put-1', 'p50'), 2)} ms | "
    f"{verdict(le(lat('ringkv', 'put-1', 'p50'), lat('etcd', 'put-1', 'p50')))} |",
    f"| zipf:0.99 vs uniform puts on RingKV: drop ≤ 20% | {fmt(zipf_drop, 2)}× of uniform | {verdict(ge(zipf_drop, 0.8))} |",
    f"| RSS per node after loading {fmt(rss_keys)} keys of the value size: ≤ etcd's (mean; range) | "
    f"{fmt(rn_r)} ({fmt(lo_r)}–{fmt(hi_r)}) vs {fmt(rn_e)} ({fmt(lo_e)}–{fmt(hi_e)}) MiB | {verdict(le(rn_r, rn_e))} |",
    f"| (for reference) RSS of all 3 nodes together after the grid | {fmt(rr)} vs {fmt(re_)} MiB | – |",
    f"| no errors, no lost writes | etcd {errors('etcd')} errors / {lost('etcd')} lost; RingKV {errors('ringkv')} errors / {lost('ringkv')} lost | "
    f"{verdict(errors('ringkv') == 0 and lost('ringkv') == 0)} |",
    "",
    "Commands of one round (the script adds `--endpoints` and `--target`):",
    "",
]
lines += [f"- `{c}`: `{commands[c]}`" for c in cases]
open(f"{out_dir}/compare-etcd.md", "w").write("\n".join(lines) + "\n")


def bars(path, title, unit, value):
    """A grouped bar chart: one group per case, etcd and RingKV side by side."""
    w, h, left, bottom = 760, 360, 70, 90
    vals = [(c, value("etcd", c) or 0, value("ringkv", c) or 0) for c in cases]
    top = max([max(e, r) for _, e, r in vals] + [1]) * 1.1
    gw = (w - left - 20) / max(len(vals), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<text x="{w/2}" y="16" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{left}" y1="{h-bottom}" x2="{w-20}" y2="{h-bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="30" x2="{left}" y2="{h-bottom}" stroke="black"/>',
           f'<text x="14" y="{(h-bottom)/2}" transform="rotate(-90 14 {(h-bottom)/2})" text-anchor="middle">{unit}</text>']
    for i in range(5):
        v = top * i / 4
        y = h - bottom - (h - bottom - 30) * i / 4
        out.append(f'<text x="{left-4}" y="{y+4}" text-anchor="end">{v:,.0f}</text>')
    for i, (c, e, r) in enumerate(vals):
        x = left + i * gw + gw * 0.15
        for j, (v, color) in enumerate(((e, "#999"), (r, "#c0392b"))):
            bh = (h - bottom - 30) * v / top
            out.append(f'<rect x="{x + j*gw*0.35:.1f}" y="{h-bottom-bh:.1f}" width="{gw*0.33:.1f}" height="{bh:.1f}" fill="{color}"/>')
        out.append(f'<text x="{x+gw*0.35:.1f}" y="{h-bottom+14}" text-anchor="middle" transform="rotate(20 {x+gw*0.35:.1f} {h-bottom+14})">{c}</text>')
    out.append(f'<rect x="{w-150}" y="30" width="10" height="10" fill="#999"/><text x="{w-135}" y="39">etcd</text>')
    out.append(f'<rect x="{w-150}" y="46" width="10" height="10" fill="#c0392b"/><text x="{w-135}" y="55">RingKV</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


bars(f"{out_dir}/throughput.svg", "Throughput (median of rounds)", "ops/s", tput)
bars(f"{out_dir}/latency-p99.svg", "p99 latency (median of rounds)", "ms", lambda s, c: lat(s, c, "p99"))
