#!/usr/bin/env python3
"""Usage: benches/rootless_entry.py [N] [RBUILD...]   (as root)

The fixed cost of rootless mode per command: `rbuild --root EMPTY images -q` run N times
(default 100) as root and as the user rbuild-rootless (ROOTLESS_USER), interleaved, both
through `setpriv` so that both pay the same wrapper; prints the median wall time and the median
CPU time of all processes (rbuild, its forks, newuidmap/newgidmap) for each binary given
(default target/release/rbuild). Each binary is copied where the user can run it; the empty
roots live in a temporary directory removed at the end.
"""
import os, pwd, resource, shutil, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
args = sys.argv[1:]
n = int(args.pop(0)) if args and args[0].isdigit() else 100
bins = args or [os.path.join(here, "target/release/rbuild")]
user = pwd.getpwnam(os.environ.get("ROOTLESS_USER", "rbuild-rootless"))

with tempfile.TemporaryDirectory(prefix="rbuild-entry-") as tmp:
    os.chmod(tmp, 0o755)
    cmds = {}
    for i, b in enumerate(bins):
        copy = os.path.join(tmp, f"rbuild{i}")
        shutil.copy(b, copy)
        os.chmod(copy, 0o755)
        for mode, (uid, gid) in (("root", (0, 0)), ("rootless", (user.pw_uid, user.pw_gid))):
            root = os.path.join(tmp, f"root-{mode}-{i}")
            os.mkdir(root)
            os.chown(root, uid, gid)
            cmds[f"{mode:8} {b}"] = ["setpriv", "--reuid", str(uid), "--regid", str(gid),
                                     "--init-groups", "--", copy, "--root", root, "images", "-q"]
    wall = {k: [] for k in cmds}
    cpu = {k: [] for k in cmds}
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": tmp}
    for _ in range(n):
        for k, cmd in cmds.items():
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wall[k].append(time.perf_counter() - t)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[k].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            if p.returncode:
                sys.exit(f"{k}: {p.stderr.decode().strip()}")
    print(f"{n} runs each, load {os.getloadavg()[0]:.2f}")
    for k in cmds:
        print(f"{k}: wall median {statistics.median(wall[k]) * 1000:.2f} ms, "
              f"cpu median {statistics.median(cpu[k]) * 1000:.2f} ms")
