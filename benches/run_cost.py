#!/usr/bin/env python3
"""Per-RUN cost of the sandbox: cold builds of a 30-RUN chain and of the same Dockerfile
without RUNs (FROM scratch + a busybox rootfs tarball, no registry), each on a fresh root;
per-RUN cost = (median chain - median base) / 30, in wall time and in CPU time of the
process tree (less sensitive to other load; child processes reparented to init, such as a
killed slirp4netns, are not counted).

    benches/run_cost.py [--reps N] [--runs N] [--network host|default|none] LABEL=RBUILD_BINARY...

Prints one line per binary. Needs root and /bin/busybox (Debian's busybox-static).
"""
import argparse, os, resource, shutil, statistics, subprocess, tarfile, tempfile, time, io

def rootfs_tar(path):
    with tarfile.open(path, "w") as t:
        for d in ["bin", "tmp", "etc", "root"]:
            i = tarfile.TarInfo(d); i.type = tarfile.DIRTYPE; i.mode = 0o1777 if d == "tmp" else 0o755
            t.addfile(i)
        t.add("/bin/busybox", "bin/busybox")
        applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
        for a in applets:
            if a == "busybox":
                continue
            i = tarfile.TarInfo("bin/" + a); i.type = tarfile.SYMTYPE; i.linkname = "busybox"
            t.addfile(i)
        data = b"root:x:0:0:root:/root:/bin/sh\n"
        i = tarfile.TarInfo("etc/passwd"); i.size = len(data); t.addfile(i, io.BytesIO(data))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--network", default="host")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rbuild-runcost-")
    ctxs = {}
    for name, runs in [("base", 0), ("chain", a.runs)]:
        ctx = os.path.join(work, name)
        os.makedirs(ctx)
        rootfs_tar(os.path.join(ctx, "rootfs.tar"))
        lines = ["FROM scratch", "ADD rootfs.tar /"] + [f"RUN echo step{i:02} >> /steps.log" for i in range(runs)]
        open(os.path.join(ctx, "Dockerfile"), "w").write("\n".join(lines) + "\n")
        ctxs[name] = ctx
    results = {}
    cpus = {}
    for rep in range(a.reps):
        for spec in a.binaries:
            label, binary = spec.split("=", 1)
            for name, ctx in ctxs.items():
                root = os.path.join(work, "root")
                shutil.rmtree(root, ignore_errors=True)
                t0 = time.perf_counter()
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                r = subprocess.run([binary, "--root", root, "build", "--progress=plain",
                                    f"--network={a.network}", ctx], capture_output=True)
                dt = time.perf_counter() - t0
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
                cpus.setdefault((label, name), []).append(cpu)
                if r.returncode != 0:
                    raise SystemExit(f"{label} {name} failed:\n{r.stderr.decode()}")
                results.setdefault((label, name), []).append(dt)
    for spec in a.binaries:
        label = spec.split("=", 1)[0]
        base = statistics.median(results[(label, "base")])
        chain = statistics.median(results[(label, "chain")])
        cbase = statistics.median(cpus[(label, "base")])
        cchain = statistics.median(cpus[(label, "chain")])
        print(f"{label}: network={a.network} wall: base {base*1000:.1f} ms, chain{a.runs} {chain*1000:.1f} ms, "
              f"per RUN {(chain-base)/a.runs*1000:.2f} ms; CPU (children, user+sys): base {cbase*1000:.1f} ms, "
              f"chain{a.runs} {cchain*1000:.1f} ms, per RUN {(cchain-cbase)/a.runs*1000:.2f} ms (medians of {a.reps})")
    shutil.rmtree(work, ignore_errors=True)

main()
