#!/usr/bin/env python3
"""Benchmarks of oneway / twoway / recovery against cp, rsync, rclone and Unison.

Generates deterministic trees (fixed seeds) under BENCH_DIR (default /dev/shm, a tmpfs:
the shared disks here are too noisy to compare tools on), runs every case for every
installed tool, alternating the tools run by run, checks that each tool's result is
correct (trees equal), and prints a table of medians: wall seconds, peak RSS, and our
time / peer time.

Usage: bench/run.sh [--quick] [--runs N] [--cases a,b,...] [--bench-dir DIR]
"""

import argparse
import hashlib
import json
import math
import os
import re
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TWOWAY_BIN_DIR runs other binaries (an older build, to compare before and after).
REL = os.environ.get("TWOWAY_BIN_DIR") or os.path.join(ROOT, "target", "release")
OLD_MTIME = 1_600_000_000


def ours(name):
    return os.path.join(REL, name)


# ---------------------------------------------------------------------------- trees


def gen_tree(root, files, dirs, mean_size, seed, links=True):
    """`files` files in `dirs` directories, log-normal sizes around `mean_size`, names
    with spaces and Unicode, some empty directories and symlinks."""
    rng = random.Random(seed)
    os.makedirs(root)
    dir_paths = []
    for d in range(dirs):
        depth = 1 + d % 3
        parts = [f"dir {d % 50}", f"sub-{d % 7}ü", f"d{d}"][:depth]
        p = os.path.join(root, *parts)
        dir_paths.append(p)
        os.makedirs(p, exist_ok=True)
    mu = math.log(mean_size) - 0.245  # sigma 0.7: mean ≈ mean_size
    for i in range(files):
        d = dir_paths[i % len(dir_paths)]
        name = f"file {i} é.dat" if i % 10 == 0 else f"f{i}.bin"
        size = min(int(rng.lognormvariate(mu, 0.7)), 4 << 20)
        with open(os.path.join(d, name), "wb") as f:
            f.write(rng.randbytes(size))
    for e in range(dirs // 20):
        os.makedirs(os.path.join(root, f"empty {e}", "inner"), exist_ok=True)
    if links:
        for s in range(min(50, len(dir_paths))):
            os.symlink(f"../f{s}.bin", os.path.join(dir_paths[s], f"link{s}"))
            os.symlink("nowhere", os.path.join(dir_paths[s], f"dangling{s}"))
    set_old_mtimes(root)


def gen_large(root, count, size, seed):
    rng = random.Random(seed)
    os.makedirs(root)
    for i in range(count):
        with open(os.path.join(root, f"large{i}.bin"), "wb") as f:
            left = size
            while left:
                n = min(left, 16 << 20)
                f.write(rng.randbytes(n))
                left -= n
    set_old_mtimes(root)


def set_old_mtimes(root):
    for d, dirs, files in os.walk(root, topdown=False):
        for n in files + dirs:
            os.utime(os.path.join(d, n), (OLD_MTIME, OLD_MTIME), follow_symlinks=False)
    os.utime(root, (OLD_MTIME, OLD_MTIME))


def list_files(root):
    out = []
    for d, dirs, files in os.walk(root):
        if d == root and "__versions__" in dirs:
            dirs.remove("__versions__")
        for n in files:
            if d == root and n == ".twoway-lock":
                continue
            p = os.path.join(d, n)
            if not os.path.islink(p):
                out.append(p)
    out.sort()
    return out


def mutate(root, seed, fraction=0.01, skip=None):
    """Rewrites, appends to, deletes and adds `fraction` of the files (a quarter each)."""
    rng = random.Random(seed)
    files = list_files(root)
    if skip is not None:
        files = [f for f in files if f not in skip]
    n = max(4, int(len(files) * fraction))
    picked = rng.sample(files, n)
    q = n // 4
    for p in picked[:q]:
        with open(p, "wb") as f:
            f.write(rng.randbytes(rng.randint(100, 20000)))
    for p in picked[q : 2 * q]:
        with open(p, "ab") as f:
            f.write(rng.randbytes(rng.randint(10, 5000)))
    for p in picked[2 * q : 3 * q]:
        os.remove(p)
    added = []
    for i, p in enumerate(picked[3 * q :]):
        added.append(os.path.join(os.path.dirname(p), f"new-{seed}-{i}.bin"))
        with open(added[-1], "wb") as f:
            f.write(rng.randbytes(rng.randint(100, 20000)))
    # Mtimes a while ago on the changes too (a user's edits, not ones made this very
    # second, which no tool's stat cache may trust).
    for p in picked[:q] + picked[q : 2 * q] + added:
        os.utime(p, (OLD_MTIME + 100 + seed, OLD_MTIME + 100 + seed))
    return set(picked)


def digest_tree(root, modes=True):
    """path → (kind, mode, mtime seconds, sha256 or target), __versions__ and the tool's
    lock file left out."""
    out = {}
    for d, dirs, files in os.walk(root):
        if d == root:
            dirs[:] = [x for x in dirs if x not in ("__versions__", ".unison")]
            files = [x for x in files if x != ".twoway-lock"]
        rel_d = os.path.relpath(d, root)
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = os.path.normpath(os.path.join(rel_d, n))
            st = os.lstat(p)
            if os.path.islink(p):
                out[rel] = ("l", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("d", st.st_mode & 0o7777 if modes else 0)
            else:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = ("f", st.st_mode & 0o7777 if modes else 0, int(st.st_mtime), h.hexdigest())
    return out


def same_tree(a, b, modes=True):
    """Equal trees; `modes=False` for a peer that does not keep permission bits."""
    da, db = digest_tree(a, modes), digest_tree(b, modes)
    if da == db:
        return True, ""
    for k in sorted(set(da) | set(db)):
        if da.get(k) != db.get(k):
            return False, f"{k}: {da.get(k)} vs {db.get(k)}"
    return False, "?"


# ---------------------------------------------------------------------------- running


GNU_TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None


def run(cmd, env=None):
    """Runs `cmd`; returns (wall seconds, peak RSS in MiB). The RSS comes from GNU time,
    whose small process is the tool's parent: measured from Python, a child's peak RSS
    would include the Python process it was forked from."""
    rss_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-rss-{os.getpid()}")
    full = [GNU_TIME, "-f", "%M", "-o", rss_file, *cmd] if GNU_TIME else cmd
    t0 = time.perf_counter()
    p = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace")
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {err[-2000:]}")
    rss = float("nan")
    if GNU_TIME:
        with open(rss_file) as f:
            rss = int(f.read().split()[-1]) / 1024
    return wall, rss


def env_for(home):
    e = dict(os.environ)
    e["TWOWAY_HOME"] = home
    e["UNISON"] = os.path.join(home, "unison")
    e["RCLONE_CONFIG"] = os.path.join(home, "rclone.conf")
    return e


def mirror_cmd(tool, src, dst, extra=()):
    if tool == "oneway":
        return [ours("oneway"), src, dst, "--once", "-q", *extra]
    if tool == "rsync":
        return ["rsync", "-a", "--delete", src + "/", dst + "/"]
    if tool == "rclone":
        return ["rclone", "sync", "--links", "--create-empty-src-dirs", src, dst]
    if tool == "cp":
        return ["cp", "-a", src + "/.", dst]
    raise ValueError(tool)


def sync_cmd(tool, a, b):
    if tool == "twoway":
        return [ours("twoway"), a, b, "--once", "-q", "--max-delete", "100"]
    if tool == "unison":
        return ["unison", a, b, "-batch", "-auto", "-times", "-prefer", "newer", "-silent", "-links", "true"]
    raise ValueError(tool)


class Results:
    def __init__(self):
        self.rows = {}  # (case, tool) -> list of (wall, rss)

    def add(self, case, tool, wall, rss):
        self.rows.setdefault((case, tool), []).append((wall, rss))

    def med(self, case, tool):
        v = self.rows.get((case, tool))
        if not v:
            return None
        return statistics.median(w for w, _ in v), max(r for _, r in v)


def fresh(path):
    if os.path.exists(path):
        subprocess.run(["rm", "-rf", path], check=True)
    os.makedirs(path)


def copy_tree(src, dst):
    if os.path.exists(dst):
        subprocess.run(["rm", "-rf", dst], check=True)
    subprocess.run(["cp", "-a", src, dst], check=True)


def check(ok_msg, case, tool):
    ok, msg = ok_msg
    if not ok:
        raise RuntimeError(f"{case} / {tool}: result differs: {msg}")


# ---------------------------------------------------------------------------- cases


def mirror_cases(R, base, tree, label, tools, runs, work):
    """initial, no change, after 1% change, for a one-way mirror."""
    for r in range(runs):
        order = tools if r % 2 == 0 else list(reversed(tools))
        for tool in order:
            home = os.path.join(work, f"home-{tool}")
            fresh(home)
            src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
            copy_tree(tree, src)
            fresh(dst)
            env = env_for(home)
            w, m = run(mirror_cmd(tool, src, dst), env)
            R.add(f"{label} mirror initial", tool, w, m)
            check(same_tree(src, dst, tool != "rclone"), "initial", tool)
            if tool == "cp":
                continue
            w, m = run(mirror_cmd(tool, src, dst), env)
            R.add(f"{label} mirror no change", tool, w, m)
            mutate(src, seed=100 + r)
            w, m = run(mirror_cmd(tool, src, dst), env)
            R.add(f"{label} mirror 1% change", tool, w, m)
            check(same_tree(src, dst, tool != "rclone"), "1%", tool)
            # Another 1% change: for oneway the steady state, where both versions exist
            # and the rotation recycles _0 (the first change above builds _0's successor
            # from nothing).
            mutate(src, seed=150 + r)
            w, m = run(mirror_cmd(tool, src, dst), env)
            R.add(f"{label} mirror 1% change, again", tool, w, m)
            check(same_tree(src, dst, tool != "rclone"), "1% again", tool)


def disk_usage(root):
    """Bytes on disk under `root`, each inode once (like du)."""
    seen, total = set(), 0
    for d, dirs, files in os.walk(root):
        for n in [d] + [os.path.join(d, f) for f in files]:
            st = os.lstat(n)
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def changed_bytes(root, picked):
    return sum(os.path.getsize(p) for p in picked if os.path.exists(p))


def versions_case(R, tree, runs, work, notes):
    """A 1%-change pass with versions on vs off (oneway), and what the version cost."""
    for r in range(runs):
        for mode in (["--no-versions"], []) if r % 2 == 0 else ([], ["--no-versions"]):
            home = os.path.join(work, "home-v")
            fresh(home)
            src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
            copy_tree(tree, src)
            fresh(dst)
            env = env_for(home)
            w0, m0 = run(mirror_cmd("oneway", src, dst, mode), env)
            R.add("W1 initial, versions on/off", "oneway (versions)" if not mode else "oneway --no-versions", w0, m0)
            if not mode:
                # Steady state: the store holds earlier versions.
                mutate(src, seed=400 + r)
                run(mirror_cmd("oneway", src, dst, mode), env)
            before = disk_usage(dst) if not mode else 0
            picked = mutate(src, seed=300 + r)
            w, m = run(mirror_cmd("oneway", src, dst, mode), env)
            if not mode and r == 0:
                grown = disk_usage(dst) - before
                new_files = [p for p in list_files(src) if "/new-" in p]
                changed = changed_bytes(src, picked) + sum(os.path.getsize(p) for p in new_files)
                notes.append(
                    f"Store growth after a 1% change of W1 with versions on (steady state: earlier "
                    f"versions exist): {grown / 1e6:.1f} MB on disk "
                    f"(BACKUP and store together), for {changed / 1e6:.1f} MB of changed or added files; "
                    f"a second full copy would be {disk_usage(src) / 1e6:.0f} MB."
                )
            R.add("W1 1% pass, versions on/off", "oneway (versions)" if not mode else "oneway --no-versions", w, m)


def history_case(R, tree, work, notes, passes=100):
    """100 oneway passes of a 1% change each: the store's size against the bytes those
    passes replaced or deleted, the manifest bytes per version, and `recovery list`."""
    home = os.path.join(work, "home-h")
    fresh(home)
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    copy_tree(tree, src)
    fresh(dst)
    env = env_for(home)
    # Every version kept: the store's size is then all the history it holds.
    cfg = os.path.join(work, "keep-all.json")
    with open(cfg, "w") as f:
        json.dump({"keep": {"last": passes + 10}}, f)
    keep_all = ["--config", cfg]
    run(mirror_cmd("oneway", src, dst, keep_all), env)
    replaced = 0
    for i in range(passes):
        picked = mutate(src, seed=5000 + i)
        # What the pass replaces or deletes in BACKUP: the old bytes of every picked file.
        replaced += sum(
            os.path.getsize(p.replace(src, dst, 1)) for p in picked if os.path.exists(p.replace(src, dst, 1))
        )
        run(mirror_cmd("oneway", src, dst, keep_all), env)
    store = os.path.join(dst, "__versions__")
    size = disk_usage(store)
    listed = subprocess.run([ours("recovery"), "list", src, "--json"], env=env, capture_output=True, check=True)
    versions = json.loads(listed.stdout)["dirs"][0]["versions"]
    vfiles = [
        os.path.join(d, f)
        for d, _, fs in os.walk(store)
        for f in fs
        if d.endswith("versions") and f.endswith(".diff")
    ]
    per_version = sum(os.path.getsize(f) for f in vfiles) / max(1, len(vfiles))
    full = [os.path.join(d, f) for d, _, fs in os.walk(store) for f in fs if f.endswith(".full")]
    walls = []
    for _ in range(5):
        w, m = run([ours("recovery"), "list", src], env)
        walls.append(w)
        R.add(f"recovery list of {len(versions)} versions", "recovery", w, m)
    notes.append(
        f"History of {passes} oneway passes of a 1% change of W1 ({len(versions)} versions "
        f"kept): the store takes {size / 1e6:.1f} MB on disk for "
        f"{replaced / 1e6:.1f} MB the passes replaced or deleted "
        f"({size / max(1, replaced):.2f}x); a version's manifest (a difference) averages "
        f"{per_version / 1e3:.0f} kB, the newest (whole) one {sum(os.path.getsize(f) for f in full) / 1e6:.1f} MB; "
        f"`recovery list` took {statistics.median(walls):.3f} s (median of 5)."
    )


def restore_case(R, tree, runs, work):
    """Bring back a deleted W1 SOURCE: recovery restore vs cp -a from the backup."""
    home = os.path.join(work, "home-r")
    fresh(home)
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    copy_tree(tree, src)
    fresh(dst)
    env = env_for(home)
    run(mirror_cmd("oneway", src, dst), env)
    for r in range(runs):
        for tool in (["recovery", "cp"] if r % 2 == 0 else ["cp", "recovery"]):
            subprocess.run(["rm", "-rf", src], check=True)
            if tool == "recovery":
                w, m = run([ours("recovery"), "restore", src, "-q"], env)
            else:
                os.makedirs(src)
                w, m = run(["cp", "-a", dst + "/.", src], env)
                subprocess.run(["rm", "-rf", os.path.join(src, "__versions__")], check=True)
            R.add("W1 restore deleted dir", tool, w, m)
            check(same_tree(tree, src), "restore", tool)


def rename_case(R, base, runs, work, have, quick):
    """A photo folder of 1 GB renamed in SOURCE: the pass that follows (versions on), next
    to copying the folder (`cp -a`) and to rsync's pass (which copies it again)."""
    folder = os.path.join(base, "photos")
    gen_large(folder, 256, int((4 << 20) * (0.05 if quick else 1)), seed=4)
    for r in range(runs):
        tools = ["oneway", "cp"] + (["rsync"] if have["rsync"] else [])
        for tool in (tools if r % 2 == 0 else list(reversed(tools))):
            home = os.path.join(work, f"home-{tool}")
            fresh(home)
            src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
            fresh(src)
            fresh(dst)
            subprocess.run(["cp", "-a", folder, os.path.join(src, "2019")], check=True)
            env = env_for(home)
            if tool == "cp":
                w, m = run(["cp", "-a", os.path.join(src, "2019"), os.path.join(dst, "2019")], env)
            else:
                run(mirror_cmd(tool, src, dst), env)
                os.rename(os.path.join(src, "2019"), os.path.join(src, "2019 Holidays"))
                w, m = run(mirror_cmd(tool, src, dst), env)
                check(same_tree(src, dst), "renamed dir", tool)
            R.add("renamed 1 GB dir: the pass", tool, w, m)
    subprocess.run(["rm", "-rf", folder], check=True)


def watch_case(R, tree, runs, work):
    """--watch on W1: the time from a file written in SOURCE to that file in BACKUP
    (oneway), with the default debounce (1 s) and with --debounce 100; and what the pass
    such a change starts costs (its own seconds, from its --json summary), with versions
    on and off, against a whole pass that finds nothing to do (oneway and twoway)."""
    configs = [("oneway", None, True), ("oneway", 100, True), ("oneway", 100, False),
               ("twoway", 100, True), ("twoway", 100, False)]
    for tool, debounce, versions in configs:
        name = "W1 watch" if tool == "oneway" else "W1 two-way watch"
        home = os.path.join(work, "home-watch")
        fresh(home)
        src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
        copy_tree(tree, src)
        fresh(dst)
        log = os.path.join(work, "watch.log")
        if os.path.exists(log):
            os.remove(log)
        cmd = [ours(tool), src, dst, "--watch", "--interval", "3600", "-q", "--log", log, "--json"]
        if debounce:
            cmd += ["--debounce", str(debounce)]
        if not versions:
            cmd += ["--no-versions"]
        events = os.path.join(work, "watch.json")
        out = open(events, "w")
        proc = subprocess.Popen(cmd, env=env_for(home), stdout=out, stderr=subprocess.DEVNULL)
        try:
            def wait_for(path, limit=120):
                t0 = time.perf_counter()
                while not os.path.exists(path):
                    if time.perf_counter() - t0 > limit:
                        raise RuntimeError(f"watch: {path} never came")
                    time.sleep(0.002)
                return time.perf_counter() - t0
            # The first pass copies the tree: its summary in the log says it is over.
            t0 = time.perf_counter()
            # (twoway's first sync says "pass 1 (first sync):").
            while not (os.path.exists(log) and re.search(r" pass 1\b", open(log, errors="replace").read())):
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError("watch: the first pass never ended")
                time.sleep(0.05)
            label = f"{name}: a write in SOURCE to BACKUP" + (f" (--debounce {debounce})" if debounce else " (debounce 1 s)")
            vlabel = "" if versions else ", --no-versions"
            if versions and tool == "oneway":
                for i in range(max(5, runs * 3)):
                    p = os.path.join(src, f"watched-{i}.txt")
                    t0 = time.perf_counter()
                    with open(p, "w") as f:
                        f.write(f"change {i}")
                    wait_for(os.path.join(dst, f"watched-{i}.txt"))
                    R.add(label, "oneway", time.perf_counter() - t0, float("nan"))
                    time.sleep(0.3)
            if debounce:
                # A file edited in place, in a folder of its own, again and again.
                deep = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(src, "dir 7")) for f in fs)[0]
                rel = os.path.relpath(deep, src)
                for i in range(max(5, runs * 3)):
                    with open(deep, "a") as f:
                        f.write(f" edit {i}")
                    want = os.path.getsize(deep)
                    t0 = time.perf_counter()
                    while os.path.getsize(os.path.join(dst, rel)) != want:
                        if time.perf_counter() - t0 > 120:
                            raise RuntimeError("watch: an edit never came")
                        time.sleep(0.002)
                    time.sleep(0.3)
        finally:
            proc.terminate()
            proc.wait()
            out.close()
        # The passes the changes started (the first pass copied the tree).
        if debounce:
            seconds = []
            for line in open(events, errors="replace"):
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if e.get("type") == "summary" and e.get("pass", 0) > 1 and e.get("operations", 0) > 0:
                    seconds.append(e["seconds"])
            for sec in seconds:
                R.add(f"{name}: the pass a one-file change starts{vlabel}", tool, sec, float("nan"))
            # A whole pass that finds nothing to do, as a run of its own.
            for _ in range(max(3, runs)):
                w, m = run([ours(tool), src, dst, "--once", "-q"] + ([] if versions else ["--no-versions"]), env_for(home))
                R.add(f"{name}: a whole pass, nothing to do{vlabel}", tool, w, m)


def w4_cases(R, base, work, runs, have, scale):
    """Issue 21's scale: W4 = 1,000,000 files of about 1 KB in 20,000 folders. The mirror
    initially, with no change and with 1% changed (oneway with versions on and off,
    rsync), and the two-way sync initially, with no change and with 1% changed on both
    sides (twoway; Unison is left out: its first sync of W4 took ten minutes here).
    Wall time and peak RSS."""
    w4 = os.path.join(base, "W4")
    t0 = time.time()
    gen_tree(w4, int(1_000_000 * scale), max(30, int(20_000 * scale)), 1024, seed=4, links=False)
    print(f"generated W4 in {time.time() - t0:.1f}s", file=sys.stderr)
    label = "W4 (1M files)"
    tools = [("oneway", ["--no-versions"]), ("oneway", []), ("rsync", [])]
    for r in range(runs):
        for tool, extra in tools if r % 2 == 0 else list(reversed(tools)):
            if not have.get(tool, True):
                continue
            name = tool + (" --no-versions" if extra else (" (versions)" if tool == "oneway" else ""))
            home = os.path.join(work, "home-w4")
            fresh(home)
            # W4 itself is SOURCE: tmpfs here holds about 3M inodes, and a copy of it
            # besides BACKUP would not fit. Each tool's 1% change is a change of its own.
            src, dst = w4, os.path.join(work, "dst")
            fresh(dst)
            cmd = mirror_cmd(tool, src, dst, extra) if tool == "oneway" else mirror_cmd(tool, src, dst)
            w, m = run(cmd, env_for(home))
            R.add(f"{label} mirror initial", name, w, m)
            w, m = run(cmd, env_for(home))
            R.add(f"{label} mirror no change", name, w, m)
            mutate(src, seed=40 + r * 10 + len(name))
            w, m = run(cmd, env_for(home))
            R.add(f"{label} mirror 1% change", name, w, m)
            fresh(dst)
    for r in range(runs):
        home = os.path.join(work, "home-w4")
        fresh(home)
        a, b = w4, os.path.join(work, "b")
        fresh(b)
        w, m = run(sync_cmd("twoway", a, b), env_for(home))
        R.add(f"{label} two-way initial", "twoway", w, m)
        w, m = run(sync_cmd("twoway", a, b), env_for(home))
        R.add(f"{label} two-way no change", "twoway", w, m)
        mutate(a, seed=70 + r)
        mutate(b, seed=80 + r)
        w, m = run(sync_cmd("twoway", a, b), env_for(home))
        R.add(f"{label} two-way 1% both sides", "twoway", w, m)
        fresh(b)
    subprocess.run(["rm", "-rf", w4], check=True)


def sync_cases(R, tree, tools, runs, work):
    for r in range(runs):
        order = tools if r % 2 == 0 else list(reversed(tools))
        for tool in order:
            home = os.path.join(work, f"home-{tool}")
            fresh(home)
            a, b = os.path.join(work, "a"), os.path.join(work, "b")
            copy_tree(tree, a)
            fresh(b)
            env = env_for(home)
            w, m = run(sync_cmd(tool, a, b), env)
            R.add("W1 two-way initial", tool, w, m)
            check(same_tree(a, b), "two-way initial", tool)
            w, m = run(sync_cmd(tool, a, b), env)
            R.add("W1 two-way no change", tool, w, m)
            touched = mutate(a, seed=200 + r)
            mutate(b, seed=250 + r, skip=touched | {p.replace(a, b, 1) for p in touched})
            w, m = run(sync_cmd(tool, a, b), env)
            R.add("W1 two-way 1% both sides", tool, w, m)
            check(same_tree(a, b), "two-way 1%", tool)
            touched = mutate(a, seed=220 + r)
            mutate(b, seed=270 + r, skip=touched | {p.replace(a, b, 1) for p in touched})
            w, m = run(sync_cmd(tool, a, b), env)
            R.add("W1 two-way 1% both sides, again", tool, w, m)
            check(same_tree(a, b), "two-way 1% again", tool)


# ---------------------------------------------------------------------------- report



def report(R, machine):
    lines = [
        f"Machine: {machine}",
        "",
        "| case | tool | wall s (median) | peak RSS MiB | ours / this tool |",
        "|---|---|---|---|---|",
    ]
    cases = []
    for case, _ in R.rows:
        if case not in cases:
            cases.append(case)
    for case in cases:
        tools = [t for c, t in R.rows if c == case]
        mine = next((t for t in tools if t in ("oneway", "twoway", "recovery", "oneway (versions)")), None)
        mine_med = R.med(case, mine) if mine else None
        for t in tools:
            w, m = R.med(case, t)
            ratio = ""
            if mine_med and t != mine and w > 0:
                ratio = f"{mine_med[0] / w:.2f}×"
            lines.append(f"| {case} | {t} | {w:.3f} | {m:.1f} | {ratio} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small trees (a smoke test)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cases", default="mirror,large,versions,history,restore,rename,watch,twoway,scale")
    ap.add_argument("--bench-dir", default=os.environ.get("BENCH_DIR", "/dev/shm"))
    ap.add_argument("--w4", action="store_true", help="add the W4 rows (1M files; about 7 minutes)")
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    if args.w4:
        cases.add("w4")

    base = os.path.join(args.bench_dir, f"twoway-bench-{os.getpid()}")
    os.makedirs(base)
    try:
        fs = subprocess.run(["stat", "-f", "-c", "%T", base], capture_output=True, text=True).stdout.strip()
        machine = f"{os.cpu_count()} cores, {fs} at {args.bench_dir}, python {sys.version.split()[0]}"
        scale = 0.02 if args.quick else 1.0
        w1 = os.path.join(base, "W1")
        t0 = time.time()
        gen_tree(w1, int(50_000 * scale), max(30, int(1_500 * scale)), 8192, seed=1)
        print(f"generated W1 in {time.time() - t0:.1f}s", file=sys.stderr)
        work = os.path.join(base, "work")
        os.makedirs(work)
        have = {t: shutil.which(t) is not None for t in ("rsync", "rclone", "unison", "cp")}
        missing = [t for t, there in have.items() if not there]
        if missing:
            # bench/run.sh installs them; run alone, say which rows will be missing.
            print(f"not installed, left out of every case: {', '.join(missing)}", file=sys.stderr)
        R = Results()
        notes = []
        if "mirror" in cases:
            tools = ["oneway"] + [t for t in ("rsync", "rclone", "cp") if have[t]]
            mirror_cases(R, base, w1, "W1", tools, args.runs, work)
        if "versions" in cases:
            versions_case(R, w1, args.runs, work, notes)
        if "history" in cases:
            history_case(R, w1, work, notes)
        if "restore" in cases:
            restore_case(R, w1, args.runs, work)
        if "rename" in cases:
            rename_case(R, base, args.runs, work, have, args.quick)
        if "watch" in cases:
            watch_case(R, w1, args.runs, work)
        if "twoway" in cases:
            tools = ["twoway"] + (["unison"] if have["unison"] else [])
            sync_cases(R, w1, tools, args.runs, work)
        if "large" in cases:
            w2 = os.path.join(base, "W2")
            gen_large(w2, 16, int((128 << 20) * (0.05 if args.quick else 1)), seed=2)
            for r in range(args.runs):
                for tool in (["oneway", "cp", "rsync"] if r % 2 == 0 else ["rsync", "cp", "oneway"]):
                    if not have.get(tool, True):
                        continue
                    home = os.path.join(work, f"home-{tool}")
                    fresh(home)
                    dst = os.path.join(work, "dst")
                    fresh(dst)
                    w, m = run(mirror_cmd(tool, w2, dst), env_for(home))
                    R.add("W2 large files initial", tool, w, m)
            subprocess.run(["rm", "-rf", w2], check=True)
        if "scale" in cases:
            w3 = os.path.join(base, "W3")
            gen_tree(w3, int(200_000 * scale), max(30, int(6_000 * scale)), 2048, seed=3)
            for r in range(args.runs):
                for tool in ["oneway"] + (["rsync"] if have["rsync"] else []):
                    home = os.path.join(work, f"home-{tool}")
                    fresh(home)
                    dst = os.path.join(work, "dst")
                    fresh(dst)
                    w, m = run(mirror_cmd(tool, w3, dst), env_for(home))
                    R.add("W3 (200k files) mirror initial", tool, w, m)
                    w, m = run(mirror_cmd(tool, w3, dst), env_for(home))
                    R.add("W3 (200k files) mirror no change", tool, w, m)
        if "w4" in cases:
            w4_cases(R, base, work, args.runs, have, scale)
        print(report(R, machine))
        for n in notes:
            print()
            print(n)
    finally:
        subprocess.run(["rm", "-rf", base])


if __name__ == "__main__":
    main()
