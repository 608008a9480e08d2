#!/usr/bin/env python3
"""Import circles between source files of each crate (issue 19, item 3).

A file "imports" another when it names an item of the other's module
(`use crate::a::b`, `crate::a::f()`, `super::x`, `self::x`). Strongly
connected sets of more than two files are printed, largest first; the exit
code is 1 when there is one, so `make check` can hold the line.

    scripts/import-cycles.py [--max 2] [crate_src_dir ...]
"""
import os
import re
import sys


def module_files(src):
    """Map module path tuples to files: () is lib.rs/main.rs."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] in ("mod",):
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            if rel and rel[0] == "bin":
                continue
            mods[tuple(rel)] = path
    return mods


PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*?)\};", re.S)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def resolve(mods, here, head, rest):
    """The file a path names: the longest module prefix that is a file."""
    if head == "crate":
        base = []
    elif head == "self":
        base = list(here)
    else:  # super
        base = list(here[:-1])
    parts = base + rest
    for n in range(len(parts), -1, -1):
        if tuple(parts[:n]) in mods:
            return tuple(parts[:n])
    return None


def edges(mods):
    out = {m: set() for m in mods}
    for m, path in mods.items():
        # A file named foo.rs that is not mod.rs: its `self` is itself;
        # `super` is its parent module.
        text = strip_comments(open(path, encoding="utf-8").read())
        # A file's own test module (at its end) names items relative to
        # itself (`use super::X` is the file, not its parent).
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        refs = []
        for g in GROUP.finditer(text):
            head, prefix, inner = g.group(1), g.group(2), g.group(3)
            pre = [p for p in prefix.split("::") if p]
            for item in re.split(r"[,\s]+", re.sub(r"\{[^}]*\}", "", inner)):
                item = item.strip()
                if item and item != "self":
                    refs.append((head, pre + [p for p in item.split("::") if p]))
                elif item == "self":
                    refs.append((head, pre))
        for p in PATH.finditer(text):
            refs.append((p.group(1), [x for x in p.group(2).split("::") if x]))
        # A module naming its own submodule without `self::`.
        for child in mods:
            if len(child) == len(m) + 1 and child[: len(m)] == m:
                if re.search(r"(?<![:\w])" + re.escape(child[-1]) + r"::", text):
                    out[m].add(child)
        for head, rest in refs:
            target = resolve(mods, m, head, rest)
            if target is not None and target != m and target != ():
                out[m].add(target)
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
            result.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return result


def main():
    args = sys.argv[1:]
    limit = 2
    if args[:1] == ["--max"]:
        limit, args = int(args[1]), args[2:]
    roots = args or sorted(
        os.path.join("crates", c, "src") for c in os.listdir("crates")
    )
    bad = False
    for src in roots:
        mods = module_files(src)
        for comp in sorted(sccs(edges(mods)), key=len, reverse=True):
            if len(comp) > limit:
                bad = True
                names = sorted(os.path.relpath(mods[c], src) for c in comp)
                print(f"{src}: a circle of {len(comp)} files: {', '.join(names)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
