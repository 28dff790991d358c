#!/usr/bin/env python3
"""Finds import circles between the modules of a Rust crate's source folder.

Usage: python3 .ci/import-cycles.py src

Every file is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`). A module depends
on another when it names it through `crate::…` or `super::…` (in `use` trees,
braces expanded, or inline paths), outside `#[cfg(test)]` code and comments. A
module and its own ancestors or descendants are not counted as a circle (a parent
declares its children, and children use their parent's items: that is Rust's
module tree, not an import circle). Prints each circle with its edges and exits 1
when there is one.
"""

import collections
import os
import re
import sys


def modules(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            files[tuple(parts)] = path
    return files


def strip(src):
    """The code without comments and without `#[cfg(test)]` items."""
    src = re.sub(r"//[^\n]*", "", src)
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    while True:
        start = src.find("#[cfg(test)]")
        if start < 0:
            return src
        # The item ends at its first `;` outside braces, or with its outermost block.
        i, depth = start + len("#[cfg(test)]"), 0
        while i < len(src):
            ch = src[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
            elif ch == ";" and depth == 0:
                break
            i += 1
        src = src[:start] + src[i + 1 :]


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [re.sub(r"\s+as\s+\w+$", "", tree).strip()]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rindex("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    return [p for it in items if it.strip() for p in expand(prefix + it.strip())]


def paths(src):
    for m in re.finditer(r"\buse\s+([^;]+);", src):
        yield from expand(m.group(1))
    for m in re.finditer(r"\b(?:crate|super)(?:::\w+)+", src):
        yield m.group(0)


def resolve(files, module, path):
    segs = [s for s in path.replace(" ", "").split("::") if s]
    if not segs or segs[0] not in ("crate", "super", "self"):
        return None
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    else:
        base = list(module)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    full = base + segs
    for k in range(len(full), -1, -1):
        if tuple(full[:k]) in files:
            return tuple(full[:k])
    return None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "src"
    files = modules(root)
    graph = collections.defaultdict(set)
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            src = strip(f.read())
        for p in paths(src):
            target = resolve(files, module, p)
            if target is None or target == module:
                continue
            if module[: len(target)] == target or target[: len(module)] == module:
                continue
            graph[module].add(target)

    index, low, stack, on, circles = {}, {}, [], set(), []
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
            if len(comp) > 1:
                circles.append(comp)

    sys.setrecursionlimit(10_000)
    for v in sorted(files):
        if v not in index:
            visit(v)
    name = lambda m: "::".join(m) or "crate"
    for comp in circles:
        print("import circle: " + " <-> ".join(sorted(name(m) for m in comp)))
        for a in sorted(comp):
            for b in sorted(graph[a] & set(comp)):
                print(f"    {name(a)} -> {name(b)}")
    if circles:
        return 1
    print(f"No import circles among the {len(files)} modules of {root}/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
