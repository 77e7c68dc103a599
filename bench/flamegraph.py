"""bench/flamegraph.py: merge collapsed stacks, rank functions, draw a flame graph SVG.

Interface
    parse_collapsed(text) -> Counter[tuple[str, ...]]
        py-spy's raw format ("frame;frame;frame COUNT" per line) as
        stack -> samples; stacks from several processes simply add up.
    top_functions(stacks, n) -> list[(frame, self_samples, total_samples)]
        ranked by self samples; total counts a frame once per stack even
        when it recurses.
    render_svg(stacks, title) -> str
        a static flame graph (root at the bottom, width = samples), each
        box with a <title> tooltip "frame (N samples, P%)".

py-spy renders one process per SVG; the daemons Fulmar profiles run as
several processes (smtpd workers, several smtp agents), so
bench/profile.py records each in raw format and merges them here.
No dependencies; pure functions.
"""

from __future__ import annotations

import html
from collections import Counter

WIDTH = 1600
ROW = 17
MIN_PX = 0.3          # boxes narrower than this are not drawn


def parse_collapsed(text: str) -> Counter:
    stacks: Counter = Counter()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def top_functions(stacks: Counter, n: int = 25) -> list[tuple[str, int, int]]:
    self_c: Counter = Counter()
    total_c: Counter = Counter()
    for stack, count in stacks.items():
        if not stack:
            continue
        self_c[stack[-1]] += count
        for frame in set(stack):
            total_c[frame] += count
    ranked = sorted(self_c, key=lambda f: (-self_c[f], f))[:n]
    return [(f, self_c[f], total_c[f]) for f in ranked]


def _tree(stacks: Counter) -> dict:
    root: dict = {"n": 0, "c": {}}
    for stack, count in stacks.items():
        node = root
        node["n"] += count
        for frame in stack:
            node = node["c"].setdefault(frame, {"n": 0, "c": {}})
            node["n"] += count
    return root


def _depth(node: dict) -> int:
    return 1 + max((_depth(c) for c in node["c"].values()), default=0)


def _colour(frame: str) -> str:
    h = sum(frame.encode()) % 60
    return "rgb(%d,%d,%d)" % (205 + h % 50, 80 + h * 2, 40 + h % 30)


def render_svg(stacks: Counter, title: str) -> str:
    root = _tree(stacks)
    total = root["n"] or 1
    depth = _depth(root)
    height = (depth + 2) * ROW + 10
    scale = WIDTH / total
    out = ['<?xml version="1.0" standalone="no"?>',
           '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="monospace" font-size="11">' % (WIDTH, height),
           '<rect width="100%" height="100%" fill="#f8f8f8"/>',
           '<text x="4" y="14">%s (%d samples)</text>' % (html.escape(title), root["n"])]

    def draw(node: dict, name: str, x: float, level: int) -> None:
        w = node["n"] * scale
        if w < MIN_PX:
            return
        y = height - (level + 1) * ROW
        label = html.escape(name)
        out.append('<g><title>%s (%d samples, %.1f%%)</title>'
                   '<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" stroke="#fff"/>'
                   % (label, node["n"], 100.0 * node["n"] / total, x, y, w, ROW - 1,
                      _colour(name)))
        chars = int(w / 6.6)
        if chars >= 3:
            text = name if len(name) <= chars else name[:chars - 2] + ".."
            out.append('<text x="%.1f" y="%d">%s</text>' % (x + 2, y + ROW - 5, html.escape(text)))
        out.append("</g>")
        cx = x
        for cname, child in sorted(node["c"].items()):
            draw(child, cname, cx, level + 1)
            cx += child["n"] * scale

    draw(root, "all", 0.0, 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"
