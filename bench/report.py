#!/usr/bin/env python3
"""Turns herald-bench result lines into markdown tables and SVG charts (stdlib only).

  bench/report.py [FILE.jsonl ...] [--only LABEL-TEXT] [--md docs/benchmarks-tables.md] [--img-dir docs/img]
      Reads result lines (default: bench/out/*.jsonl), prints markdown tables per scenario
      (or writes them to --md) and writes SVG charts into --img-dir when given:
        latency-vs-subscribers.svg        fanout: publish->last p50/p99 by subscriber count
        cpu-per-delivery-vs-subscribers.svg  fanout: server CPU per delivery by subscriber count
        latency-vs-rate.svg               fanout at one N: publish->last p50/p99 by offered deliveries/s
        cpu-per-delivery-vs-rate.svg      fanout at one N: server CPU per delivery by offered deliveries/s,
                                          with the plain-TCP floor (one write per delivery)
        memory-vs-connections.svg         idle: server RSS (and kernel slab) per connection

  bench/report.py --runs [FILE.jsonl ...]
      One compact markdown row per run (time, scenario, server, setup, main figures, loss).

  bench/report.py --spread [FILE.jsonl ...]
      Groups runs of the same setup (scenario, target, Nchan workers, encoding, N, rate, writers)
      and prints the median, range and count of the main figures: repeated runs show the spread.

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
FIGURES["floor"] = [
    ("writers", "writer threads", "", None),
    ("interval_s", "round interval", "s", None),
    ("writer_cpu_us_per_write", "writer CPU per write", "us", True),
    ("writer_sys_us_per_write", "of which system", "us", True),
    ("writer_run_us_per_write", "writer on-CPU per write (schedstat)", "us", True),
    ("round_write_span.p50_ms", "writes per round p50", "ms", True),
    ("latency_first.p50_ms", "publish->first p50", "ms", True),
    ("latency_last.p50_ms", "publish->last p50", "ms", True),
    ("latency_last.p99_ms", "publish->last p99", "ms", True),
    ("lost", "lost", "", True),
    ("dups", "dups", "", True),
    ("client_cpu_s", "reader CPU", "s", None),
]
SCENARIOS = ["idle", "fanout", "personal", "churn", "handshake", "api", "floor"]


def nchan_workers(r):
    """Nchan worker processes of a run (from the label compare.sh writes), else None."""
    for part in (r.get("label") or "").split():
        if part.startswith("nchan_workers="):
            return part.split("=", 1)[1]
    return None


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
    for scenario in SCENARIOS + sorted(set(by) - set(SCENARIOS)):
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


def log_ticks(lo, hi):
    """1-2-5 ticks covering [lo, hi] (lo > 0)."""
    ticks = []
    d = 10 ** math.floor(math.log10(lo))
    while d <= hi * 10:
        for m in (1, 2, 5):
            t = m * d
            ticks.append(t)
        d *= 10
    below = [t for t in ticks if t <= lo]
    above = [t for t in ticks if t >= hi]
    start = below[-1] if below else ticks[0]
    end = above[0] if above else ticks[-1]
    return [t for t in ticks if start <= t <= end]


def base_name(name):
    """Series that differ only in a trailing p50/p99/RSS/slab share a colour."""
    for suffix in (" p50", " p99", " RSS", " slab"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def tick(v):
    """Short tick labels: 200, 1.5, 20k, 1M."""
    v = float(v)
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def svg_chart(title, xlabel, ylabel, series, path, logx=False, logy=False, hlines=()):
    """series: list of (name, [(x, y), ...], dashed); hlines: [(y, label[, "left"])] reference lines."""
    pts = [p for _, s, _ in series for p in s if p[1] is not None and p[0] is not None]
    if logx or logy:
        pts = [(x, y) for x, y in pts if (x > 0 or not logx) and (y > 0 or not logy)]
    if not pts:
        return False
    W, H, L, R, T, B = 760, 440, 80, 240, 50, 60
    pw, ph = W - L - R, H - T - B
    ys = [y for _, y in pts] + [h[0] for h in hlines]
    if logx:
        xt = log_ticks(min(x for x, _ in pts), max(x for x, _ in pts))
    else:
        xt = nice_ticks(0, max(x for x, _ in pts))
    if logy:
        yt = log_ticks(min(ys), max(ys))
    else:
        yt = nice_ticks(0, max(ys) * 1.1 or 1)
    xmin, xmax = xt[0], xt[-1]
    ymin, ymax = yt[0], yt[-1]

    def scale(v, lo, hi, log):
        if log:
            return (math.log10(v) - math.log10(lo)) / ((math.log10(hi) - math.log10(lo)) or 1)
        return (v - lo) / ((hi - lo) or 1)

    def sx(x):
        return L + scale(x, xmin, xmax, logx) * pw

    def sy(y):
        return T + ph - scale(y, ymin, ymax, logy) * ph

    e = html.escape
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2 - R / 2}" y="24" text-anchor="middle" font-size="15">{e(title)}</text>']
    for t in yt:
        y = sy(t)
        o.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{tick(t)}</text>')
    for t in xt:
        x = sx(t)
        o.append(f'<line x1="{x:.1f}" y1="{T + ph}" x2="{x:.1f}" y2="{T + ph + 5}" stroke="#333"/>')
        o.append(f'<text x="{x:.1f}" y="{T + ph + 18}" text-anchor="middle">{tick(t)}</text>')
    o.append(f'<line x1="{L}" y1="{T}" x2="{L}" y2="{T + ph}" stroke="#333"/>')
    o.append(f'<line x1="{L}" y1="{T + ph}" x2="{L + pw}" y2="{T + ph}" stroke="#333"/>')
    o.append(f'<text x="{L + pw / 2}" y="{H - 15}" text-anchor="middle">{e(xlabel)}</text>')
    o.append(f'<text transform="translate(18 {T + ph / 2}) rotate(-90)" text-anchor="middle">{e(ylabel)}</text>')
    for y, label, *where in hlines:
        if ymin <= y <= ymax:
            o.append(f'<line x1="{L}" y1="{sy(y):.1f}" x2="{L + pw}" y2="{sy(y):.1f}" stroke="#555" '
                     f'stroke-dasharray="2 3"/>')
            if where and where[0] == "left":
                o.append(f'<text x="{L + 6}" y="{sy(y) - 4:.1f}" fill="#555">{e(label)}</text>')
            else:
                o.append(f'<text x="{L + pw - 4}" y="{sy(y) - 4:.1f}" text-anchor="end" fill="#555">{e(label)}</text>')
    bases = []
    for name, _, _ in series:
        b = base_name(name)
        if b not in bases:
            bases.append(b)
    for i, (name, s, dashed) in enumerate(series):
        c = COLORS[bases.index(base_name(name)) % len(COLORS)]
        s = sorted(p for p in s if p[1] is not None and p[0] is not None
                   and (p[0] > 0 or not logx) and (p[1] > 0 or not logy))
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
    w = nchan_workers(r)
    if t == "nchan" and w:
        t += f" {w}w"
    return t


def latest_by_x(points):
    """Keeps the last point for each x (rows are sorted by date)."""
    d = {}
    for x, y in points:
        d[x] = y
    return sorted(d.items())


def median(v):
    v = sorted(v)
    n = len(v)
    if n == 0:
        return None
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def median_by_x(points):
    """The median y for each x (repeated runs of one setup)."""
    d = {}
    for x, y in points:
        if y is not None:
            d.setdefault(x, []).append(y)
    return sorted((x, median(v)) for x, v in d.items())


def label_stem(r):
    """The label without a repeat number (r1, r2...) and without nchan_workers=N."""
    parts = (r.get("label") or "").split()
    return " ".join(p for p in parts if not p.startswith("nchan_workers=") and not (p[:1] == "r" and p[1:].isdigit()))


def spread(rows):
    """Median [min-max] (count) of the main figures per setup."""
    groups = {}
    for r in rows:
        sc = r.get("scenario", "?")
        key = (sc, series_key(r), r.get("connections_requested"), r.get("rate"), r.get("writers"),
               r.get("interval_s"), r.get("max_backlog_ms"), label_stem(r))
        groups.setdefault(key, []).append(r)
    out = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        rs = groups[key]
        sc, name, n, rate, writers, interval, backlog, stem = key
        setup = f"{sc} {name} N={fmt(n)}"
        if rate:
            setup += f" rate={fmt(rate)}"
        if writers:
            setup += f" writers={writers} interval={interval}s"
        if backlog:
            setup += f" max-backlog={backlog}ms"
        if stem:
            setup += f" [{stem}]"
        out.append(f"\n{setup}: {len(rs)} run(s), {', '.join((r.get('date') or '')[11:16] for r in rs)}")
        for path, label, unit, _ in FIGURES.get(sc, []):
            v = [get(r, path) for r in rs]
            v = [x for x in v if isinstance(x, (int, float)) and not isinstance(x, bool)]
            if not v:
                continue
            m = median(v)
            rng = f"  [{fmt(min(v))} - {fmt(max(v))}]" if len(v) > 1 else ""
            label_unit = f"{label} ({unit})" if unit else label
            out.append(f"  {label_unit:<44} {fmt(m):>12}{rng}")
        early = [r for r in rs if r.get("stopped_early")]
        if early:
            out.append(f"  stopped early: {len(early)} of {len(rs)}")
    return "\n".join(out)


# One short line per run: the figures that matter for each scenario.
MAIN = {
    "idle": [("memory.rss_per_conn_bytes", "RSS/conn {} B"), ("memory.slab_per_conn_bytes", "slab/conn {} B"),
             ("idle_cpu_pct", "idle CPU {} %"), ("connect_errors", "{} connect errors")],
    "fanout": [("latency_last.p50_ms", "last p50 {} ms"), ("latency_last.p99_ms", "p99 {} ms"),
               ("deliveries_per_s", "{}/s"), ("server_cpu_us_per_delivery", "{} µs/delivery"),
               ("deliveries_per_write_syscall", "{} deliveries per write call")],
    "personal": [("latency_last.p50_ms", "last p50 {} ms"), ("latency_last.p99_ms", "p99 {} ms"),
                 ("server_cpu_us_per_delivery", "{} µs/delivery")],
    "churn": [("handshakes_per_s_measured", "{} reconnects/s"), ("connect_errors_measured", "{} errors"),
              ("latency_delivery.p99_ms", "delivery p99 {} ms"), ("server_cpu_pct", "CPU {} %")],
    "handshake": [("handshakes_per_s", "{}/s"), ("handshake_latency.p50_ms", "p50 {} ms"),
                  ("server_cpu_us_per_handshake", "{} µs/handshake"), ("connect_errors", "{} errors")],
    "api": [("requests_per_s", "{}/s"), ("api_latency.p99_ms", "p99 {} ms"),
            ("server_cpu_us_per_request", "{} µs/request"), ("api_errors", "{} errors")],
    "floor": [("writer_cpu_us_per_write", "{} µs/write"), ("rounds_per_s", "{} rounds/s"),
              ("latency_last.p50_ms", "last p50 {} ms"), ("latency_last.p99_ms", "p99 {} ms")],
}


def runs_table(rows):
    """Markdown: one compact row per run."""
    out = ["| # | time (UTC) | scenario | server | setup | figures | lost / dups | label |",
           "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        sc = r.get("scenario", "?")
        setup = f"N={fmt(r.get('connections', r.get('connections_requested')))}"
        if r.get("rate") and sc in ("fanout", "personal", "churn"):
            setup += f", {r['rate']:g}/s"
        if r.get("nodes", 1) and r.get("nodes", 1) > 1:
            setup += f", {r['nodes']} nodes"
        if sc == "floor":
            setup += f", {r.get('writers')} writer(s), every {r.get('interval_s')} s"
        if r.get("max_backlog_ms"):
            setup += ", backlog stop"
        if r.get("stopped_early"):
            setup += " (**stopped early**)"
        figs = [f.format(fmt(get(r, p))) for p, f in MAIN.get(sc, []) if get(r, p) is not None]
        lost = r.get("lost")
        ld = "" if lost is None and r.get("dups") is None else f"{fmt(lost)} / {fmt(r.get('dups'))}"
        out.append(f"| {i} | {(r.get('date') or '')[11:16]} | {sc} | {series_key(r)} | {setup} | "
                   f"{', '.join(figs)} | {ld} | {label_stem(r).replace('|', '/')} |")
    return "\n".join(out)


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
    # By subscriber count only when the runs cover at least three counts.
    if len({r.get("connections_requested") for r in fan}) < 3:
        lat = {}
    if lat:
        series = [(k, latest_by_x(v), k.endswith("p99")) for k, v in sorted(lat.items())]
        p = os.path.join(img_dir, "latency-vs-subscribers.svg")
        if svg_chart("Fan-out: publish → last subscriber", "subscribers of one channel", "latency (ms)", series, p):
            written.append(p)
        series = [(k, latest_by_x(v), False) for k, v in sorted(cpu.items())]
        p = os.path.join(img_dir, "cpu-per-delivery-vs-subscribers.svg")
        if svg_chart("Fan-out: server CPU per delivery", "subscribers of one channel", "µs per delivery", series, p):
            written.append(p)
    # Fan-out at the most common subscriber count: latency and CPU per delivery against the
    # offered delivery rate (publications/s x subscribers), runs stopped early included.
    fan_all = [r for r in rows if r.get("scenario") == "fanout" and r.get("connections")]
    if fan_all:
        counts = {}
        for r in fan_all:
            counts[r["connections_requested"]] = counts.get(r["connections_requested"], 0) + 1
        n = max(counts, key=counts.get)
        lat, cpu = {}, {}
        for r in fan_all:
            if r.get("connections_requested") != n or not r.get("rate"):
                continue
            k = series_key(r)
            x = r["rate"] * r["connections"]
            lat.setdefault(k + " p50", []).append((x, get(r, "latency_last.p50_ms")))
            lat.setdefault(k + " p99", []).append((x, get(r, "latency_last.p99_ms")))
            cpu.setdefault(k, []).append((x, get(r, "server_cpu_us_per_delivery")))
        series = [(k, median_by_x(v), k.endswith("p99")) for k, v in sorted(lat.items())]
        p = os.path.join(img_dir, "latency-vs-rate.svg")
        if svg_chart(f"Fan-out to {n:,} subscribers: publish → last subscriber", "offered deliveries/s (log)",
                     "latency, ms (log)", series, p, logx=True, logy=True, hlines=[(200, "200 ms", "left")]):
            written.append(p)
        floors = {}
        for r in rows:
            if r.get("scenario") == "floor" and r.get("writer_cpu_us_per_write") is not None:
                floors.setdefault(r.get("interval_s"), []).append(r["writer_cpu_us_per_write"])
        hl = [(1.5, "goal 1.5 µs")]
        for iv, v in sorted(floors.items(), reverse=True):
            when = "readers asleep" if iv and iv >= 0.5 else "machine busy"
            hl.append((median(v), f"1 write per delivery, {when}: {median(v):.1f} µs"))
        series = [(k, median_by_x(v), False) for k, v in sorted(cpu.items())]
        p = os.path.join(img_dir, "cpu-per-delivery-vs-rate.svg")
        if svg_chart(f"Fan-out to {n:,} subscribers: server CPU per delivery", "offered deliveries/s (log)",
                     "µs per delivery (log)", series, p, logx=True, logy=True, hlines=hl):
            written.append(p)
    mem = {}
    for r in rows:
        if r.get("scenario") == "fanout" and (r.get("nodes") or 1) > 1 and get(r, "memory.rss_per_conn_bytes"):
            # Connected and settled before publishing: idle memory over several nodes.
            mem.setdefault(f"{series_key(r)} RSS, {r['nodes']} nodes", []).append(
                (r.get("connections"), get(r, "memory.rss_per_conn_bytes")))
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
    ap.add_argument("--spread", action="store_true", help="median and range of repeated runs per setup")
    ap.add_argument("--runs", action="store_true", help="one compact markdown row per run")
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
    if a.spread:
        print(spread(rows))
        return
    if a.runs:
        print(runs_table(rows))
        return
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
