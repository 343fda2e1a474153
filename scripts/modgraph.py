#!/usr/bin/env python3
"""Dependencies between a crate's top-level modules, and the cycles among them.

Usage: scripts/modgraph.py crates/server/src [--dot]

A module is a top-level file or folder of the crate's src/ (`dispatch.rs`, `api/`); it
depends on another when its code names `crate::other` (in a `use` or a path). Prints the
number of lines, each module's dependencies, and every strongly connected component of more
than one module (a cycle: none of its modules can be understood or moved alone).
"""
import os
import re
import sys


def modules(src):
    mods = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry in ("lib.rs", "main.rs"):
            continue
        if entry.endswith(".rs"):
            mods[entry[:-3]] = [path]
        elif os.path.isdir(path):
            files = []
            for root, _, names in os.walk(path):
                files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
            if files:
                mods[entry] = sorted(files)
    return mods


def deps(mods):
    out = {}
    for name, files in mods.items():
        text = "".join(open(f, encoding="utf-8").read() for f in files)
        # `crate::x`, and `use crate::{x, y::z}` groups.
        found = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
        for group in re.findall(r"crate::\{([^}]*)\}", text):
            found |= {g.strip().split("::")[0] for g in group.split(",") if g.strip()}
        out[name] = sorted(d for d in found if d in mods and d != name)
    return out


def sccs(graph):
    index, low, stack, on, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            result.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in result if len(c) > 1]


def main():
    src = sys.argv[1]
    mods = modules(src)
    graph = deps(mods)
    lines = sum(
        sum(1 for _ in open(f, encoding="utf-8"))
        for files in mods.values()
        for f in files
    )
    for extra in ("lib.rs", "main.rs"):
        p = os.path.join(src, extra)
        if os.path.exists(p):
            lines += sum(1 for _ in open(p, encoding="utf-8"))
    print(f"{src}: {len(mods)} modules, {lines} lines of Rust")
    for name in sorted(graph):
        print(f"  {name} -> {', '.join(graph[name]) or '-'}")
    cycles = sccs(graph)
    print(f"cycles: {len(cycles)}")
    for c in cycles:
        print(f"  {len(c)} modules: {' '.join(c)}")


if __name__ == "__main__":
    main()
