#!/usr/bin/env python3
"""Lists the import cycles among the files of Rust source trees.

Usage: import-cycles.py [-v] DIR...   (exit status 1 when there is one)

A file is its module (`a/mod.rs` is `a`); an edge is a `crate::` or
`super::` path in its code (comments and `#[cfg(test)] mod tests` left out),
to the deepest module the path names. Each strongly connected group of
more than one file is a cycle; `-v` prints the edges inside them.
"""
import os
import re
import sys

PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")
GROUP = re.compile(r"use\s+(crate|super)::\{([^}]*)\}")


def modules(root):
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, root)[:-3].split("/")
                if parts[-1] in ("mod", "main", "lib"):
                    parts = parts[:-1]
                found["::".join(parts)] = path
    return found


def deepest(found, segments):
    for end in range(len(segments), 0, -1):
        name = "::".join(segments[:end])
        if name in found:
            return name
    return None


def edges_of(found):
    edges = {module: set() for module in found}
    for module, path in found.items():
        text = open(path, encoding="utf-8").read()
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        text = re.sub(r"//[^\n]*", "", text)
        here = module.split("::") if module else []
        parent = here[:-1]
        for kind, rest in PATH.findall(text):
            segments = [s for s in rest.split("::") if s]
            base = [] if kind == "crate" else parent
            while kind == "super" and segments and segments[0] == "super":
                base, segments = base[:-1], segments[1:]
            target = deepest(found, base + segments)
            if target is not None and target != module:
                edges[module].add(target)
        for kind, inner in GROUP.findall(text):
            base = [] if kind == "crate" else parent
            for item in inner.split(","):
                first = item.strip().split("::")[0].strip()
                target = deepest(found, base + [first]) if first and first != "self" else None
                if target is not None and target != module:
                    edges[module].add(target)
    return edges


def cycles(edges):
    sys.setrecursionlimit(10000)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def main():
    verbose = "-v" in sys.argv[1:]
    roots = [a for a in sys.argv[1:] if a != "-v"] or ["src"]
    total = 0
    for root in roots:
        found = modules(root)
        edges = edges_of(found)
        groups = cycles(edges)
        total += len(groups)
        for group in sorted(groups, key=len, reverse=True):
            print(f"{root}: cycle of {len(group)}: {' '.join(m or '(root)' for m in group)}")
            if verbose:
                for v in group:
                    for w in sorted(edges[v] & set(group)):
                        print(f"  {v} -> {w}")
        print(f"{root}: {len(groups)} import cycles among {len(found)} files")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
