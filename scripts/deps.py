#!/usr/bin/env python3
"""Module dependencies of one crate, and their cycles.

Usage: python3 scripts/deps.py native/weft_transport/src

Prints each top-level module with the modules it uses through `crate::`
(unit tests and comments left out; the crate root, lib.rs, is ignored: it
composes every module), then the cycles. Exits 1 when there is a cycle, so
that `make test` (scripts/test.sh) keeps import circles from coming back.
"""
import glob
import os
import re
import sys

d = sys.argv[1]
mods = {os.path.basename(f)[:-3] for f in glob.glob(d + '/*.rs')} | \
    {os.path.basename(x) for x in glob.glob(d + '/*') if os.path.isdir(x)}
mods.discard('lib')
deps = {}
for f in glob.glob(d + '/**/*.rs', recursive=True):
    rel = os.path.relpath(f, d)
    top = rel.split('/')[0].replace('.rs', '')
    if top == 'lib':
        continue
    s = open(f).read()
    s = re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*', '', s, flags=re.S)
    s = "\n".join(l for l in s.split("\n") if not l.strip().startswith("//"))
    found = set()
    for m in re.finditer(r'crate::\{([^}]*)\}', s):
        for part in re.split(r'[,\s]+', m.group(1)):
            p = part.split('::')[0]
            if p in mods:
                found.add(p)
    for m in re.finditer(r'crate::([a-z_]+)', s):
        if m.group(1) in mods:
            found.add(m.group(1))
    found.discard(top)
    deps.setdefault(top, set()).update(found)
for k in sorted(deps):
    print(k, '->', ' '.join(sorted(deps[k])))


def reach(a):
    seen = set()
    st = [a]
    while st:
        x = st.pop()
        for y in deps.get(x, ()):
            if y not in seen:
                seen.add(y)
                st.append(y)
    return seen


cyc = sorted(set(tuple(sorted((a, b))) for a in deps for b in deps[a] if a in reach(b)))
print('cycles:', cyc)
sys.exit(1 if cyc else 0)
