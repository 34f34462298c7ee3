#!/usr/bin/env python3
"""A mirror (or, with --tool twoway, a two-way sync) planned in part against one planned
whole, on the same random changes (not part of CI).

    python3 bench/narrow_check.py --seed 7 --rounds 25
    python3 bench/narrow_check.py --tool twoway --seed 7 --rounds 25

Two copies of one small tree, old mtimes; each round makes the same random changes to
both SOURCEs (edits, removals, new folders, modes, renames, a file that becomes a folder
and back, folder mtimes), then runs oneway on one pair read compact and walked four paths
a window (TWOWAY_COMPACT_FROM=0, TWOWAY_WINDOW=4: the pass plans only its part) and on
the other read whole. Checks: the same actions, the same SHA-256s and version, BACKUP
equal to SOURCE, and the next pass on each ends before its trees are whole (what was
recorded is the replica). With twoway, both replicas of each pair change (the same
changes in both pairs), and each pair's replicas must end equal, and equal to the other
pair's. Exits 1 at the first difference.
"""
import argparse
import os, random, shutil, subprocess, sys, re
ap = argparse.ArgumentParser()
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--rounds", type=int, default=25)
ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release"))
ap.add_argument("--dir", default="/tmp/narrow-check")
ap.add_argument("--tool", choices=["oneway", "twoway"], default="oneway")
args = ap.parse_args()
B=args.bin
R=args.dir
rnd=random.Random(args.seed)
shutil.rmtree(R, ignore_errors=True)
os.makedirs(R)
T0=1_600_000_000
clock=[T0]
def tick():
    clock[0]+=7; return clock[0]
def put(p, text):
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p,"w") as f: f.write(text)
    t=tick(); os.utime(p,(t,t))
def build(root):
    r=random.Random(5)
    for d in range(6):
        for s in range(3):
            for i in range(r.randint(0,6)):
                put(f"{root}/d{d}/s{s}/f{i}", f"{d}{s}{i}"*r.randint(1,5))
        put(f"{root}/d{d}/top", "top")
    os.symlink("d0/top", f"{root}/link")
def entries(root):
    out=[]
    for dp, dn, fn in os.walk(root):
        dn[:]=[d for d in dn if d!="__versions__"]
        for n in dn+fn: out.append(os.path.relpath(os.path.join(dp,n),root))
    return sorted(out)
def mutate(root, r):
    es=entries(root)
    for _ in range(r.randint(1,6)):
        es=entries(root)
        if not es: break
        p=os.path.join(root, r.choice(es)); k=r.randint(0,7)
        if not os.path.lexists(p): continue
        if k==0 and os.path.isfile(p) and not os.path.islink(p): put(p, "edited"+str(r.random()))
        elif k==1:
            if os.path.isdir(p) and not os.path.islink(p): shutil.rmtree(p)
            else: os.remove(p)
        elif k==2: put(os.path.join(root, f"n{r.randint(0,9)}/x{r.randint(0,9)}"), "new")
        elif k==3 and os.path.isfile(p) and not os.path.islink(p): os.chmod(p, 0o600)
        elif k==4:
            q=p+"-moved"
            if not os.path.lexists(q): os.rename(p,q)
        elif k==5 and os.path.isfile(p) and not os.path.islink(p):
            os.remove(p); put(os.path.join(p,"inside"),"became a dir")
        elif k==6 and os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p); put(p, "became a file")
        elif k==7 and os.path.isdir(p) and not os.path.islink(p):
            t=tick(); os.utime(p,(t,t))
def run(src,dst,frm,home,extra=()):
    env=dict(os.environ, TWOWAY_HOME=home, TWOWAY_COMPACT_FROM=frm, TWOWAY_WINDOW="4", RUST_LOG="debug")
    p=subprocess.run([f"{B}/{args.tool}","--once","-v",src,dst,*extra],env=env,capture_output=True,text=True)
    return p.returncode, p.stdout+p.stderr
def acts(out):
    a=[]
    for l in out.splitlines():
        if re.search(r"\((SOURCE -> BACKUP|A -> B|B -> A|A|B)\)$", l):
            a.append(l.split(" ",1)[1])
    return sorted(a)
pairs=[(f"{R}/s1",f"{R}/b1","0",f"{R}/h1"),(f"{R}/s2",f"{R}/b2","1000000",f"{R}/h2")]
for s,b,f,h in pairs:
    clock[0]=T0
    build(s); os.makedirs(b); run(s,b,f,h); run(s,b,f,h); rc,o=run(s,b,"0",h)
    assert "nothing to do, found before" in o, o
narrowed=0
conflicted=0
for rnd_i in range(args.rounds):
    seed=rnd.randint(0,10**9)
    c0=clock[0]
    for s,b,f,h in pairs:
        clock[0]=c0
        for root, k in [(s, 0)] + ([(b, 1)] if args.tool == "twoway" else []):
            try: mutate(root, random.Random(seed + k))
            except (IsADirectoryError, NotADirectoryError, FileExistsError, FileNotFoundError): pass
        if args.tool == "twoway" and seed % 2:
            # A file edited on both sides, differently: a conflict.
            both = [e for e in entries(s) if os.path.isfile(os.path.join(s, e)) and not os.path.islink(os.path.join(s, e))
                    and os.path.isfile(os.path.join(b, e)) and not os.path.islink(os.path.join(b, e))]
            if both:
                e = random.Random(seed).choice(both)
                put(os.path.join(s, e), "edited in A " + str(seed))
                put(os.path.join(b, e), "edited in B " + str(seed))
    outs=[run(s,b,f,h) for s,b,f,h in pairs]
    (r1,o1),(r2,o2)=outs
    n="something to do in" in o1
    narrowed+=n
    conflicted+=n and "conflict:" in o1
    assert r1==r2==0, (r1,r2,o1[-2000:],o2[-2000:])
    assert acts(o1)==acts(o2), (acts(o1),acts(o2))
    keys = ["SOURCE sha256 ","BACKUP sha256 ","new version "] if args.tool == "oneway" else ["A sha256 ","B sha256 ","new version of A ","new version of B "]
    for key in keys:
        v1=re.search(re.escape(key)+r"(\S+)",o1); v2=re.search(re.escape(key)+r"(\S+)",o2)
        assert (v1 and v1.group(1))==(v2 and v2.group(1)), key
    for s,b,f,h in pairs:
        d=subprocess.run(["diff","-r","--no-dereference","-x","__versions__",s,b],capture_output=True,text=True)
        assert d.returncode==0, d.stdout
    d=subprocess.run(["diff","-r","--no-dereference","-x","__versions__",pairs[0][0],pairs[1][0]],capture_output=True,text=True)
    assert d.returncode==0, d.stdout
    for s,b,f,h in pairs:
        rc,o=run(s,b,"0",h)
        assert "nothing to do, found before" in o, o[-3000:]
shutil.rmtree(R, ignore_errors=True)
print(f"seed {args.seed}: {args.rounds} rounds alike, {narrowed} of them planned in part ({conflicted} with a conflict)")
