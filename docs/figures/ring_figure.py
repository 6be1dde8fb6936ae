#!/usr/bin/env python3
"""Draws the ring of a running cluster as an SVG, from `ringleader status --json` on stdin.

    ringleader status --json | python3 docs/figures/ring_figure.py > docs/figures/ring.svg

The circle is the 64-bit hash space, 0 at the top, clockwise. Each shard is an arc over its
hash range, coloured by the node leading it; the three small dots on an arc are its replicas
(the leader's ringed). The legend lists each node with the shards it leads and holds.
"""
import json
import math
import sys

COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


def point(fraction, radius, cx=260, cy=285):
    angle = 2 * math.pi * fraction - math.pi / 2
    return cx + radius * math.cos(angle), cy + radius * math.sin(angle)


def main():
    status = json.load(sys.stdin)
    shards = status["shards"]
    nodes = sorted(n["id"] for n in status["nodes"] if n.get("up"))
    colour = {node: COLOURS[i % len(COLOURS)] for i, node in enumerate(nodes)}
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="760" height="570" '
           'font-family="sans-serif" font-size="13">',
           f'<text x="20" y="24" font-size="16">ring epoch {status.get("epoch")}: '
           f'{len(shards)} shards, {len(nodes)} nodes</text>']
    for shard in shards:
        start_text, end_text = shard["range"].split("-")
        start = int(start_text, 16) / 2**64
        end = (int(end_text, 16) + 1) / 2**64
        leader = shard.get("leader")
        stroke = colour.get(leader, "#999999")
        x1, y1 = point(start, 200)
        x2, y2 = point(end - 0.002, 200)
        large = 1 if end - start > 0.5 else 0
        out.append(f'<path d="M {x1:.1f} {y1:.1f} A 200 200 0 {large} 1 {x2:.1f} {y2:.1f}" '
                   f'fill="none" stroke="{stroke}" stroke-width="28"/>')
        lx, ly = point((start + end) / 2, 240)
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle" '
                   f'dominant-baseline="middle">{shard["group"]}</text>')
        for i, replica in enumerate(shard.get("replicas") or []):
            dx, dy = point(start + (end - start) * (i + 1) / 4, 165)
            ring = ' stroke="black" stroke-width="2"' if replica == leader else ""
            out.append(f'<circle cx="{dx:.1f}" cy="{dy:.1f}" r="6" '
                       f'fill="{colour.get(replica, "#999999")}"{ring}/>')
    for i, node in enumerate(nodes):
        led = [s["group"] for s in shards if s.get("leader") == node]
        held = [s["group"] for s in shards if node in (s.get("replicas") or [])]
        y = 70 + 26 * i
        out.append(f'<rect x="520" y="{y - 11}" width="16" height="16" fill="{colour[node]}"/>')
        out.append(f'<text x="544" y="{y + 2}">node {node}: leads {led}, holds {len(held)}</text>')
    out.append('<text x="20" y="558" fill="#555">arc colour: leader; dots: replicas '
               '(ringed: the leader); numbers: group ids; 0x0 at the top, clockwise</text>')
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
