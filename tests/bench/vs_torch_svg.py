"""Log-log scaling plots for vs_torch.py, as plain hand-written SVG.

One plot per operation: time against size for each series (ours, torch,
the limit measured in the same run), with each series' log-log slope in
the legend so that the growth of the cost can be read off directly.
"""

import math

COLORS = {"ours": "#d62728", "torch": "#1f77b4", "torch2": "#2ca02c",
          "limit": "#555555"}


def _fmt_ms(v):
    if v >= 1000:
        return f"{v / 1000:g} s"
    return f"{v:g} ms"


def slope(xs, ys):
    """Least-squares slope of log10(y) on log10(x) over the points with a
    value; None with fewer than two."""
    pts = [(math.log10(x), math.log10(y)) for x, y in zip(xs, ys)
           if y is not None and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def plot(path, title, xlabel, xs, xlabels, series):
    """xs: sizes (x values), xlabels: their tick labels; series: list of
    (name, kind, values) with kind a COLORS key (limit is dashed) and
    values in ms aligned with xs (None where not measured)."""
    # Margins; the legend sits under the x-axis label, one line a series.
    W, L, R, T = 640, 78, 24, 40
    B = 84 + 18 * (len(series) + 1)
    H = 300 + B
    ys = [v for _, _, vals in series for v in vals if v]
    x0, x1 = math.log10(min(xs)), math.log10(max(xs))
    pad = 0.06 * (x1 - x0 or 1)
    x0, x1 = x0 - pad, x1 + pad
    y0, y1 = math.log10(min(ys)), math.log10(max(ys))
    ypad = 0.08 * (y1 - y0 or 1)
    y0, y1 = y0 - ypad, y1 + ypad

    def px(x):
        return L + (math.log10(x) - x0) / (x1 - x0) * (W - L - R)

    def py(y):
        return H - B - (math.log10(y) - y0) / (y1 - y0) * (H - B - T)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" '
           f'height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" '
           'font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{(L + W - R) / 2:.0f}" y="22" text-anchor="middle" '
           f'font-size="13" font-weight="bold">{title}</text>']
    # y grid: decades, with 2 and 5 (or 3) between them when the range is
    # short enough for the labels to fit
    span = y1 - y0
    mults = (1, 2, 5) if span < 2.2 else (1, 3) if span < 4.5 else (1,)
    for e in range(math.floor(y0), math.ceil(y1) + 1):
        for k in mults:
            v = k * 10.0 ** e
            if not (y0 <= math.log10(v) <= y1):
                continue
            y = py(v)
            out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" '
                       f'y2="{y:.1f}" stroke="{"#ccc" if k == 1 else "#eee"}"'
                       '/>')
            out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" '
                       f'text-anchor="end">{_fmt_ms(v)}</text>')
    for x, lab in zip(xs, xlabels):
        X = px(x)
        out.append(f'<line x1="{X:.1f}" y1="{T}" x2="{X:.1f}" y2="{H - B}" '
                   'stroke="#f2f2f2"/>')
        out.append(f'<line x1="{X:.1f}" y1="{H - B}" x2="{X:.1f}" '
                   f'y2="{H - B + 5}" stroke="black"/>')
        out.append(f'<text x="{X:.1f}" y="{H - B + 9}" text-anchor="end" '
                   f'transform="rotate(-35 {X:.1f} {H - B + 9})">{lab}</text>')
    out.append(f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" '
               'stroke="black"/>')
    out.append(f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" '
               'stroke="black"/>')
    out.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - B + 62}" '
               f'text-anchor="middle">{xlabel} (log scale)</text>')
    out.append(f'<text x="16" y="{(H - B + T) / 2:.0f}" transform="rotate('
               f'-90 16 {(H - B + T) / 2:.0f})" text-anchor="middle">'
               'time per call (log scale)</text>')
    for i, (name, kind, vals) in enumerate(series):
        col = COLORS[kind]
        dash = ' stroke-dasharray="6,4"' if kind == "limit" else ""
        pts = [(px(x), py(v)) for x, v in zip(xs, vals) if v]
        if len(pts) > 1:
            line = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            out.append(f'<polyline points="{line}" fill="none" '
                       f'stroke="{col}" stroke-width="2"{dash}/>')
        for a, b in pts:
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" '
                       f'fill="{col}"/>')
        s = slope(xs, vals)
        label = name + ("" if s is None else f" (slope {s:.2f})")
        ly = H - B + 88 + 18 * i
        out.append(f'<line x1="{L + 10}" y1="{ly - 4}" x2="{L + 34}" '
                   f'y2="{ly - 4}" stroke="{col}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{L + 40}" y="{ly}">{label}</text>')
    out.append(f'<text x="{L + 10}" y="{H - B + 88 + 18 * len(series)}" '
               'fill="#555">slope: of log time on log size; 1 means the '
               'time grows like the size</text>')
    out.append("</svg>\n")
    with open(path, "w") as fh:
        fh.write("\n".join(out))
