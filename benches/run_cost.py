#!/usr/bin/env python3
"""Per-RUN cost of the sandbox: cold builds of a 30-RUN chain and of the same Dockerfile
without RUNs (FROM scratch + a busybox rootfs tarball, no registry), each on a fresh root;
per-RUN cost = (median chain - median base) / 30.

    benches/run_cost.py [--reps N] [--network host|default|none] LABEL=RBUILD_BINARY...

Prints one line per binary. Needs root and /bin/busybox (Debian's busybox-static).
"""
import argparse, os, shutil, statistics, subprocess, tarfile, tempfile, time, io

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
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rbuild-runcost-")
    ctxs = {}
    for name, runs in [("base", 0), ("chain", 30)]:
        ctx = os.path.join(work, name)
        os.makedirs(ctx)
        rootfs_tar(os.path.join(ctx, "rootfs.tar"))
        lines = ["FROM scratch", "ADD rootfs.tar /"] + [f"RUN echo step{i:02} >> /steps.log" for i in range(runs)]
        open(os.path.join(ctx, "Dockerfile"), "w").write("\n".join(lines) + "\n")
        ctxs[name] = ctx
    results = {}
    for rep in range(a.reps):
        for spec in a.binaries:
            label, binary = spec.split("=", 1)
            for name, ctx in ctxs.items():
                root = os.path.join(work, "root")
                shutil.rmtree(root, ignore_errors=True)
                t0 = time.perf_counter()
                r = subprocess.run([binary, "--root", root, "build", "--progress=plain",
                                    f"--network={a.network}", ctx], capture_output=True)
                dt = time.perf_counter() - t0
                if r.returncode != 0:
                    raise SystemExit(f"{label} {name} failed:\n{r.stderr.decode()}")
                results.setdefault((label, name), []).append(dt)
    for spec in a.binaries:
        label = spec.split("=", 1)[0]
        base = statistics.median(results[(label, "base")])
        chain = statistics.median(results[(label, "chain")])
        print(f"{label}: network={a.network} base {base*1000:.1f} ms, chain30 {chain*1000:.1f} ms, "
              f"per RUN {(chain-base)/30*1000:.2f} ms (medians of {a.reps})")
    shutil.rmtree(work, ignore_errors=True)

main()
