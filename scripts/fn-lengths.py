#!/usr/bin/env python3
"""Lists the longest functions under the given directories (default: src), outside test modules.

A function runs from its `fn` line to the closing brace at the same indentation; rustfmt's layout
makes that exact enough. Usage: scripts/fn-lengths.py [--max N] [DIR...]; exits 1 if any function
is longer than --max lines.
"""
import os
import re
import sys

args = sys.argv[1:]
limit = None
if args[:1] == ["--max"]:
    limit, args = int(args[1]), args[2:]
roots = args or ["src"]
fn_re = re.compile(r"^(\s*)(pub(\([a-z]+\))? )?(async )?(const )?(unsafe )?fn (\w+)")
found = []
for root in roots:
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            lines = open(path, encoding="utf-8").read().split("\n")
            in_tests = None
            for i, line in enumerate(lines):
                if in_tests is None and line.startswith("#[cfg(test)]"):
                    in_tests = i
                if in_tests is not None:
                    break
                m = fn_re.match(line)
                if not m or line.rstrip().endswith(";"):
                    continue
                indent = m.group(1)
                for j in range(i + 1, len(lines)):
                    if lines[j] == indent + "}":
                        found.append((j - i + 1, f"{path}:{i + 1}", m.group(7)))
                        break
found.sort(reverse=True)
try:
    for n, where, fn in found[:15]:
        print(f"{n:4} {where} {fn}")
except BrokenPipeError:
    sys.stderr.close()
if limit is not None and found and found[0][0] > limit:
    sys.exit(1)
