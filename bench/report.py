#!/usr/bin/env python3
"""Turns herald-bench result lines into markdown tables and SVG charts (stdlib only).

  bench/report.py [FILE.jsonl ...] [--only LABEL-TEXT] [--md docs/benchmarks-tables.md] [--img-dir docs/img]
      Reads result lines (default: bench/out/*.jsonl), prints markdown tables per scenario
      (or writes them to --md) and writes SVG charts into --img-dir when given:
        latency-vs-subscribers.svg   fanout: publish->last p50/p99 by subscriber count
        memory-vs-connections.svg    idle: server RSS per connection by connection count
        deliveries-vs-subscribers.svg  fanout: deliveries/s and server CPU per delivery

  bench/report.py --compare HERALD.json NCHAN.json
      Prints the main figures of two runs of the same scenario side by side with their ratio.
"""

import argparse
import glob
import html
import json
import math
import os
import sys

# (key path, label, unit, lower is better) per scenario.
FIGURES = {
    "idle": [
        ("memory.rss_per_conn_bytes", "server RSS per connection", "B", True),
        ("memory.slab_per_conn_bytes", "kernel slab per connection (both ends)", "B", True),
        ("idle_cpu_pct", "server CPU while idle", "% of a core", True),
        ("pings_per_s", "pings answered", "/s", None),
        ("handshakes_per_s", "handshakes during ramp", "/s", False),
    ],
    "fanout": [
        ("latency_first.p50_ms", "publish->first p50", "ms", True),
        ("latency_last.p50_ms", "publish->last p50", "ms", True),
        ("latency_last.p99_ms", "publish->last p99", "ms", True),
        ("latency_delivery.p99_ms", "per-delivery p99", "ms", True),
        ("deliveries_per_s", "deliveries", "/s", False),
        ("server_cpu_us_per_delivery", "server CPU per delivery", "us", True),
        ("server_cpu_pct", "server CPU", "% of a core", True),
        ("memory.rss_per_conn_bytes", "server RSS per connection", "B", True),
        ("lost", "lost deliveries", "", True),
        ("dups", "duplicated deliveries", "", True),
        ("client_cpu_s", "client CPU (load generator)", "s", None),
    ],
    "churn": [
        ("handshakes_per_s_measured", "reconnects achieved", "/s", False),
        ("connect_errors_measured", "connect errors", "", True),
        ("server_cpu_pct", "server CPU", "% of a core", True),
        ("latency_delivery.p50_ms", "per-delivery p50", "ms", True),
        ("latency_delivery.p99_ms", "per-delivery p99", "ms", True),
        ("lost", "in-session gaps", "", True),
    ],
    "handshake": [
        ("handshakes_per_s", "handshakes", "/s", False),
        ("handshake_latency.p50_ms", "handshake p50", "ms", True),
        ("handshake_latency.p99_ms", "handshake p99", "ms", True),
        ("server_cpu_us_per_handshake", "server CPU per handshake", "us", True),
        ("connect_errors", "errors", "", True),
    ],
    "api": [
        ("requests_per_s", "publishes", "/s", False),
        ("api_latency.p50_ms", "latency p50", "ms", True),
        ("api_latency.p99_ms", "latency p99", "ms", True),
        ("server_cpu_us_per_request", "server CPU per request", "us", True),
        ("server_cpu_pct", "server CPU", "% of a core", True),
        ("api_errors", "errors", "", True),
    ],
}
FIGURES["personal"] = FIGURES["fanout"]


def get(d, path):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    print(f"{p}:{n}: skipped ({e})", file=sys.stderr)
    rows.sort(key=lambda r: r.get("date") or "")
    return rows


def compare(a_path, b_path):
    a = load([a_path])[-1]
    b = load([b_path])[-1]
    scenario = a.get("scenario")
    name_a, name_b = a.get("target", "a"), b.get("target", "b")
    print(f"\n{scenario}: {name_a} vs {name_b}, {a.get('connections', a.get('connections_requested'))} connections, "
          f"{a.get('machine', {}).get('nproc')} cores, {a.get('date')}")
    w = 42
    print(f"{'figure':<{w}} {name_a:>12} {name_b:>12} {name_a + '/' + name_b:>14}")
    for path, label, unit, lower in FIGURES.get(scenario, []):
        va, vb = get(a, path), get(b, path)
        ratio = "-"
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and vb not in (0, 0.0):
            r = va / vb
            better = ""
            if lower is not None and va != vb:
                better = "  better" if (va < vb) == lower else "  worse"
            ratio = f"{r:.2f}x{better}"
        label_unit = f"{label} ({unit})" if unit else label
        print(f"{label_unit:<{w}} {fmt(va):>12} {fmt(vb):>12} {ratio:>14}")


def markdown(rows):
    out = []
    by = {}
    for r in rows:
        by.setdefault(r.get("scenario", "?"), []).append(r)
    for scenario in ["idle", "fanout", "personal", "churn", "handshake", "api"] + sorted(set(by) - set(FIGURES)):
        rs = by.get(scenario)
        if not rs:
            continue
        figs = FIGURES.get(scenario, [])
        head = ["date (UTC)", "target", "enc", "N"]
        if scenario in ("fanout", "personal", "churn"):
            head.append("rate/s")
        head += [f"{label} ({unit})" if unit else label for _, label, unit, _ in figs] + ["label"]
        out.append(f"### {scenario}\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in rs:
            cells = [
                (r.get("date") or "")[:16].replace("T", " "),
                r.get("target", ""),
                r.get("encoding", "") if r.get("target") == "herald" else "",
                fmt(r.get("connections", r.get("connections_requested"))),
            ]
            if scenario in ("fanout", "personal", "churn"):
                cells.append(fmt(r.get("rate")))
            cells += [fmt(get(r, p)) for p, _, _, _ in figs]
            cells.append((r.get("label") or "").replace("|", "/"))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# SVG line charts, written by hand.

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]


def nice_ticks(lo, hi, n=5):
    """Round tick values covering [lo, hi]."""
    span = (hi - lo) or 1.0
    mag = 10 ** math.floor(math.log10(span / n))
    step = mag
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if span / step <= n:
            break
    t = math.floor(lo / step) * step
    ticks = []
    while t < hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def svg_chart(title, xlabel, ylabel, series, path):
    """series: list of (name, [(x, y), ...], dashed)."""
    pts = [p for _, s, _ in series for p in s if p[1] is not None]
    if not pts:
        return False
    W, H, L, R, T, B = 720, 420, 80, 200, 50, 60
    pw, ph = W - L - R, H - T - B
    xmin, xmax = 0, max(x for x, _ in pts)
    ymin, ymax = 0, max(y for _, y in pts) * 1.1 or 1
    xt, yt = nice_ticks(xmin, xmax), nice_ticks(ymin, ymax)
    xmax, ymax = max(xmax, xt[-1]), max(ymax, yt[-1])

    def sx(x):
        return L + (x - xmin) / ((xmax - xmin) or 1) * pw

    def sy(y):
        return T + ph - (y - ymin) / ((ymax - ymin) or 1) * ph

    e = html.escape
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2 - R / 2}" y="24" text-anchor="middle" font-size="15">{e(title)}</text>']
    for t in yt:
        y = sy(t)
        o.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(float(t))}</text>')
    for t in xt:
        x = sx(t)
        o.append(f'<line x1="{x:.1f}" y1="{T + ph}" x2="{x:.1f}" y2="{T + ph + 5}" stroke="#333"/>')
        o.append(f'<text x="{x:.1f}" y="{T + ph + 18}" text-anchor="middle">{fmt(float(t))}</text>')
    o.append(f'<line x1="{L}" y1="{T}" x2="{L}" y2="{T + ph}" stroke="#333"/>')
    o.append(f'<line x1="{L}" y1="{T + ph}" x2="{L + pw}" y2="{T + ph}" stroke="#333"/>')
    o.append(f'<text x="{L + pw / 2}" y="{H - 15}" text-anchor="middle">{e(xlabel)}</text>')
    o.append(f'<text transform="translate(18 {T + ph / 2}) rotate(-90)" text-anchor="middle">{e(ylabel)}</text>')
    for i, (name, s, dashed) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        s = sorted(p for p in s if p[1] is not None)
        if not s:
            continue
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        o.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for x, y in s:
            o.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{c}"><title>{e(name)}: {fmt(x)} → {fmt(y)}</title></circle>')
        ly = T + 10 + i * 20
        o.append(f'<line x1="{L + pw + 15}" y1="{ly}" x2="{L + pw + 40}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/>')
        o.append(f'<text x="{L + pw + 46}" y="{ly + 4}">{e(name)}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")
    return True


def series_key(r):
    t = r.get("target", "?")
    if t == "herald" and r.get("encoding"):
        t += f" {r['encoding']}"
    return t


def latest_by_x(points):
    """Keeps the last point for each x (rows are sorted by date)."""
    d = {}
    for x, y in points:
        d[x] = y
    return sorted(d.items())


def charts(rows, img_dir):
    os.makedirs(img_dir, exist_ok=True)
    written = []
    fan = [r for r in rows if r.get("scenario") == "fanout" and not r.get("stopped_early")]
    lat, dps, cpu = {}, {}, {}
    for r in fan:
        k = f"{series_key(r)} {fmt(r.get('rate'))}/s"
        n = r.get("connections")
        lat.setdefault(k + " p50", []).append((n, get(r, "latency_last.p50_ms")))
        lat.setdefault(k + " p99", []).append((n, get(r, "latency_last.p99_ms")))
        dps.setdefault(k, []).append((n, get(r, "deliveries_per_s")))
        cpu.setdefault(k, []).append((n, get(r, "server_cpu_us_per_delivery")))
    if lat:
        series = [(k, latest_by_x(v), k.endswith("p99")) for k, v in sorted(lat.items())]
        p = os.path.join(img_dir, "latency-vs-subscribers.svg")
        if svg_chart("Fan-out: publish → last subscriber", "subscribers of one channel", "latency (ms)", series, p):
            written.append(p)
        series = [(k, latest_by_x(v), False) for k, v in sorted(cpu.items())]
        p = os.path.join(img_dir, "cpu-per-delivery-vs-subscribers.svg")
        if svg_chart("Fan-out: server CPU per delivery", "subscribers of one channel", "µs per delivery", series, p):
            written.append(p)
    mem = {}
    for r in rows:
        if r.get("scenario") != "idle":
            continue
        k = series_key(r)
        for c in r.get("checkpoints") or [r.get("memory") or {}]:
            if c.get("rss_per_conn_bytes") is not None:
                mem.setdefault(k + " RSS", []).append((c.get("connections"), c.get("rss_per_conn_bytes")))
            if c.get("slab_per_conn_bytes") is not None:
                mem.setdefault(k + " slab", []).append((c.get("connections"), c.get("slab_per_conn_bytes")))
    if mem:
        series = [(k, latest_by_x(v), k.endswith("slab")) for k, v in sorted(mem.items())]
        p = os.path.join(img_dir, "memory-vs-connections.svg")
        if svg_chart("Idle subscribed WebSockets: memory per connection", "connections", "bytes per connection",
                     series, p):
            written.append(p)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="result files (default bench/out/*.jsonl)")
    ap.add_argument("--md", help="write the markdown tables to this file instead of stdout")
    ap.add_argument("--img-dir", help="write SVG charts into this directory")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two result files (last line of each)")
    ap.add_argument("--only", help="use only results whose label contains this text")
    a = ap.parse_args()
    if a.compare:
        compare(*a.compare)
        return
    here = os.path.dirname(os.path.abspath(__file__))
    files = a.files or sorted(glob.glob(os.path.join(here, "out", "*.jsonl")))
    if not files:
        sys.exit("no result files (bench/out/*.jsonl)")
    rows = load(files)
    if a.only:
        rows = [r for r in rows if a.only in (r.get("label") or "")]
    md = markdown(rows)
    if a.md:
        with open(a.md, "w") as f:
            f.write(md + "\n")
        print(f"wrote {a.md}", file=sys.stderr)
    else:
        print(md)
    if a.img_dir:
        for p in charts(rows, a.img_dir):
            print(f"wrote {p}", file=sys.stderr)


if __name__ == "__main__":
    main()
