#!/usr/bin/env python3
"""Fails when modules of one directory of the library import each other in a cycle.

Usage: module-cycles.py DIR CRATE_PATH   e.g.  module-cycles.py src/socketio crate::socketio

A module is a file or folder directly in DIR. Module A depends on B when a file of A names B:
through `super::B` (from A's top file), `super::super::B` (from a file one folder down) or
`CRATE_PATH::B`. Test modules (after `#[cfg(test)]`) are left out. Prints the graph and exits 1 if
any set of modules reaches itself (a mutual pair or a longer cycle).
"""
import os
import re
import sys


def modules(root):
    deps = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            parts = os.path.relpath(os.path.join(dirpath, name), root)[:-3].split(os.sep)
            if parts == ["mod"]:
                continue
            top = parts[0]
            # How many folders below DIR's level the file's own module sits.
            depth = len(parts) - 1 - (parts[-1] == "mod")
            text = open(os.path.join(dirpath, name), encoding="utf-8").read()
            text = text.split("#[cfg(test)]")[0]
            found = set(re.findall(r"\b" + re.escape(CRATE) + r"::([a-z_][a-z0-9_]*)", text))
            if depth == 0:
                found |= set(re.findall(r"(?<!::)\bsuper::([a-z_][a-z0-9_]*)", text))
            elif depth == 1:
                found |= set(re.findall(r"\bsuper::super::([a-z_][a-z0-9_]*)", text))
            deps.setdefault(top, set()).update(found - {top, "super"})
    return {m: {d for d in ds if d in deps} for m, ds in deps.items()}


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    ROOT, CRATE = sys.argv[1], sys.argv[2]
    graph = modules(ROOT)
    for m in sorted(graph):
        print(f"  {m} -> {', '.join(sorted(graph[m])) or '-'}")
    found = cycles(graph)
    if found:
        print(f"modules of {ROOT} that import each other: {found}", file=sys.stderr)
        sys.exit(1)
