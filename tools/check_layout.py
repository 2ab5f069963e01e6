#!/usr/bin/env python3
"""check_layout: no #include "..." crosses a folder's line.

The folder rules (docs/ARCHITECTURE.md, issue 12), checked for every C, header and assembly file:
  - guest code (boot, arch-x86_64, kernel, hv, kmcl, drivers, lib, apps) includes nothing under sim/;
  - host code (sim/) includes, outside sim/, only guest-side */proto/ headers, kmcl/core/ and kernel's
    portable headers (kernel/status.h, string.h, fmt.h, list.h, readonce.h);
  - */proto/ and kmcl/core/ include only */proto/, kmcl/core/ and those portable kernel headers;
  - arch-x86_64 includes nothing of hv, kmcl, drivers, lib, apps;
  - test/ may include anything (tools/ and docs/ hold no C).
Include paths are relative to the repository root (the build passes -I.); one that names no file
there is taken relative to the including file's folder.

Prints each violation as "file:line: includes X: rule" and exits 1 if there is any (0: none, 2: bad
usage). Python 3, no dependencies.

  tools/check_layout.py [--root DIR]     check the tree at DIR (default: this repository)
  tools/check_layout.py --self-test      check the checker on a temporary tree of good and bad includes
"""

import os
import re
import subprocess
import sys
import tempfile

GUEST = ("boot", "arch-x86_64", "kernel", "hv", "kmcl", "drivers", "lib", "apps")
PORTABLE_KERNEL = ("kernel/status.h", "kernel/string.h", "kernel/fmt.h", "kernel/list.h", "kernel/readonce.h")
ARCH_FORBIDDEN = ("hv", "kmcl", "drivers", "lib", "apps")
SOURCE = re.compile(r"\.(c|h|S)$")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
SKIP_DIRS = {".git", "build"}

RULE_GUEST = "guest code includes nothing under sim/"
RULE_HOST = "sim/ includes only */proto/ headers, kmcl/core/ and kernel's portable headers"
RULE_PORTABLE = "*/proto/ and kmcl/core/ include only */proto/, kmcl/core/ and kernel's portable headers"
RULE_ARCH = "arch-x86_64 includes nothing of hv, kmcl, drivers, lib, apps"


def top(path):
    return path.split("/", 1)[0]


def is_portable(path):
    """*/proto/ (a guest-side folder's protocol part) or kmcl/core/."""
    parts = path.split("/")
    return (top(path) in GUEST and "proto" in parts[:-1]) or path.startswith("kmcl/core/")


def portable_target(target):
    return is_portable(target) or target in PORTABLE_KERNEL


def violation(src, target):
    """The rule src including target breaks, or None."""
    kind = top(src)
    if kind == "test":
        return None
    if is_portable(src) and not portable_target(target):
        return RULE_PORTABLE
    if kind in GUEST and top(target) == "sim":
        return RULE_GUEST
    if kind == "sim" and top(target) != "sim" and not portable_target(target):
        return RULE_HOST
    if kind == "arch-x86_64" and top(target) in ARCH_FORBIDDEN:
        return RULE_ARCH
    return None


def git(root, *args):
    return subprocess.run(["git", "-C", root] + list(args), capture_output=True, text=True, check=True).stdout


def sources(root):
    """Repository-relative paths of the files to check: in a git checkout (root its top), the tracked
    files and the untracked ones git does not ignore; elsewhere every file below root."""
    try:
        if git(root, "rev-parse", "--show-prefix").strip() == "":
            listed = git(root, "ls-files", "--cached", "--others", "--exclude-standard").splitlines()
            return sorted(p for p in listed if SOURCE.search(p) and os.path.isfile(os.path.join(root, p)))
    except (OSError, subprocess.CalledProcessError):
        pass
    found = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS)
        for f in files:
            if SOURCE.search(f):
                found.append(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/"))
    return sorted(found)


def resolve(root, src, name):
    if os.path.exists(os.path.join(root, name)):
        return os.path.normpath(name).replace(os.sep, "/")
    local = os.path.normpath(os.path.join(os.path.dirname(src), name)).replace(os.sep, "/")
    if os.path.exists(os.path.join(root, local)):
        return local
    return os.path.normpath(name).replace(os.sep, "/")


def check(root):
    """Every violation under root, as "file:line: includes X: rule" lines."""
    out = []
    for src in sources(root):
        with open(os.path.join(root, src), encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                target = resolve(root, src, m.group(1))
                rule = violation(src, target)
                if rule:
                    out.append("%s:%d: includes %s: %s" % (src, n, m.group(1), rule))
    return out


# The self-test's tree: per rule one include it allows and one it refuses (the refused ones marked
# BAD, with the rule the checker must name), and test/ including anything.
SELF_TEST_TREE = {
    "kernel/status.h": [],
    "kernel/log.h": [],
    "kmcl/core/ring.h": [("kernel/status.h", None), ("kernel/log.h", RULE_PORTABLE)],
    "hv/proto/wire.h": [("kmcl/core/ring.h", None), ("hv/hv.h", RULE_PORTABLE)],
    "hv/hv.h": [("hv/proto/wire.h", None), ("sim/host.h", RULE_GUEST)],
    "sim/host.h": [("hv/proto/wire.h", None), ("hv/hv.h", RULE_HOST)],
    "sim/host.c": [("sim/host.h", None), ("kernel/status.h", None)],
    "arch-x86_64/cpu.h": [("kernel/log.h", None), ("hv/proto/wire.h", RULE_ARCH)],
    "test/t.c": [("sim/host.h", None), ("hv/hv.h", None), ("arch-x86_64/cpu.h", None)],
}


def write_tree(root, with_bad):
    want = []
    for path, includes in SELF_TEST_TREE.items():
        os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
        lines = ["/* %s */" % path]
        for target, rule in includes:
            if rule and not with_bad:
                continue
            lines.append('#include "%s"' % target)
            if rule:
                want.append("%s:%d: includes %s: %s" % (path, len(lines), target, rule))
        with open(os.path.join(root, path), "w") as f:
            f.write("\n".join(lines) + "\n")
    return sorted(want)


def self_test():
    """Runs this script on a tree with only good includes (no output, status 0) and on the same tree
    with the bad ones (exactly those reported, status 1). Returns 0 if both hold."""
    ok = True
    for with_bad in (False, True):
        with tempfile.TemporaryDirectory() as root:
            want = write_tree(root, with_bad)
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--root", root], capture_output=True,
                               text=True)
            got = sorted(p.stdout.splitlines())
            if got != want or p.returncode != (1 if want else 0):
                ok = False
                print("self-test: %s includes: status %d, reported:\n  %s\nexpected:\n  %s" % (
                    "good and bad" if with_bad else "only good", p.returncode, "\n  ".join(got) or "(nothing)",
                    "\n  ".join(want) or "(nothing)"))
    if ok:
        print("self-test: good includes pass, each rule's bad include is reported")
    return 0 if ok else 1


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = argv[1:]
    if args == ["--self-test"]:
        return self_test()
    if args[:1] == ["--root"] and len(args) == 2:
        root = args[1]
    elif args:
        print("usage: " + "\n       ".join(l.strip() for l in __doc__.strip().splitlines()[-2:]), file=sys.stderr)
        return 2
    found = check(root)
    for v in found:
        print(v)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
