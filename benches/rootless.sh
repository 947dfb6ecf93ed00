#!/usr/bin/env bash
# Usage: benches/rootless.sh [CASES]
#   Rootless against root mode (issue 14: within 1.5x in every phase): the shared bench
#   (SHARED/bench/bench.sh rbuild CASE) once as root and once as an ordinary user with a
#   subordinate id range, case by case, the two modes interleaved per repetition, then the
#   median wall time of each phase (cold, noop, change) and the ratio rootless / root.
#   Fair: the user's run is the bench itself started as the user (setpriv), so rbuild runs
#   directly as the user, on a context the user owns (the bench materialises it under the user's
#   BENCH_STATE), with a root the user owns; no wrapper copies anything per build. Both modes keep
#   their pulled bases across the cold phase (pulled once before timing, each cold phase untags
#   the bench image and runs `rbuild prune -f`), as benches/suite.sh does for the peer bench.
#   Defaults: CASES="small chain".
# Env: RBUILD (default target/release/rbuild; copied where the user can run it)  REPS=5
#      ROOTLESS_USER=rbuild-rootless (created with a range if missing)
#      RBUILD_SHARED (default ../shared next to the repository)  BENCH_STATE=/var/lib/rbuild-bench
#      OUT (default $BENCH_STATE/rootless-<time>): results-{root,rootless}.jsonl and the table
#      KEEP_ROOTS=1 keeps both modes' state roots and contexts (under $BENCH_STATE/rootless-user
#      and $BENCH_STATE/rootless-cmp-root) for another run; by default they are removed at the end
# Needs: root, the shared bench set up (setup.sh: registry 127.0.0.1:5000), uidmap, setpriv.
set -euo pipefail
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && { sed -n '2,19p' "$0"; exit 0; }
HERE=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${RBUILD_SHARED:-$HERE/../shared}
CASES=${1:-small chain}
REPS=${REPS:-5}
STATE=${BENCH_STATE:-/var/lib/rbuild-bench}
U=${ROOTLESS_USER:-rbuild-rootless}
OUT=${OUT:-$STATE/rootless-$(date +%Y%m%d-%H%M%S)}
SRC_BIN=${RBUILD:-$HERE/target/release/rbuild}
[[ $(id -u) == 0 ]] || { echo "run as root (it starts the user's half through setpriv)" >&2; exit 3; }
[[ -x $SRC_BIN ]] || { echo "no rbuild binary at $SRC_BIN (cargo build --release -p rbuild)" >&2; exit 3; }
[[ -x $SHARED/bench/bench.sh ]] || { echo "no shared bench at $SHARED/bench (set RBUILD_SHARED)" >&2; exit 3; }

if ! id "$U" >/dev/null 2>&1; then
  useradd --no-create-home --shell /bin/sh -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$U"
fi
grep -q "^$U:" /etc/subuid && grep -q "^$U:" /etc/subgid ||
  usermod --add-subuids 300000-365535 --add-subgids 300000-365535 "$U"
UID_=$(id -u "$U") GID_=$(id -g "$U")

mkdir -p "$OUT"
# Everything of the user's half lives in one directory the user owns.
UHOME=$STATE/rootless-user
mkdir -p "$UHOME"
chown "$U:" "$UHOME"
chmod 0755 "$UHOME" "$OUT"
BIN=$UHOME/rbuild
cp "$SRC_BIN" "$BIN"
chmod 0755 "$BIN"
chown "$U:" "$BIN"

# The cold phase of both modes: untag the bench images, remove build results (bases stay).
PRUNE='
  names=$("$RBUILD" images --format json | python3 -c "
import json, sys
for line in sys.stdin:
    i = json.loads(line)
    if i[\"Repository\"].startswith(\"rbuild-bench/\"):
        print(i[\"Repository\"] + \":\" + i[\"Tag\"])")
  [[ -z $names ]] || "$RBUILD" rmi -f $names >/dev/null
  "$RBUILD" prune -f >/dev/null'

# The shared cases are read-only files; the user's bench edits its context's CHANGE_FILE and
# re-extracts the context, so both modes materialise their contexts writable by their owner
# (TAR_OPTIONS reaches both tars of cases/gen.sh): the same files, each mode's own owner.
RHOME=$STATE/rootless-cmp-root
mkdir -p "$RHOME"
[[ ${KEEP_ROOTS:-0} == 1 ]] || trap 'rm -rf "${UHOME:?}" "${RHOME:?}"' EXIT
as_root() {  # as_root CMD... with the root mode's environment
  env TAR_OPTIONS=--mode=u+w BENCH_STATE="$RHOME/state" \
    RBUILD="$BIN" RBUILD_ROOT="$RHOME/root" RBUILD_PRUNE_CMD="$PRUNE" REPS=1 \
    RESULTS="$OUT/results-root.jsonl" BENCH_LABEL=rbuild-root "$@"
}
as_user() {  # as_user CMD... as the user, in a clean environment of the user's own
  (cd "$UHOME" && setpriv --reuid "$UID_" --regid "$GID_" --init-groups -- \
    env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$UHOME" XDG_DATA_HOME="$UHOME/xdg" \
    DOCKER_CONFIG="$UHOME/docker" BENCH_STATE="$UHOME/state" TAR_OPTIONS=--mode=u+w \
    RBUILD="$BIN" RBUILD_ROOT="$UHOME/root" RBUILD_PRUNE_CMD="$PRUNE" REPS=1 \
    RESULTS="$OUT/results-rootless.jsonl" BENCH_LABEL=rbuild-rootless "$@")
}
touch "$OUT/results-root.jsonl" "$OUT/results-rootless.jsonl"
chown "$U:" "$OUT/results-rootless.jsonl"

for base in busybox:latest debian:bookworm; do
  as_root "$BIN" pull -q "127.0.0.1:5000/$base" >/dev/null
  as_user "$BIN" pull -q "127.0.0.1:5000/$base" >/dev/null
done
as_user "$BIN" info >&2

for case in $CASES; do
  for rep in $(seq 1 "$REPS"); do
    echo "== $case rep $rep/$REPS" >&2
    as_root "$SHARED/bench/bench.sh" rbuild "$case" >/dev/null
    as_user "$SHARED/bench/bench.sh" rbuild "$case" >/dev/null
  done
done

python3 - "$OUT" "$CASES" <<'PY' | tee "$OUT/table.md"
import json, statistics, sys
out, cases = sys.argv[1], sys.argv[2].split()
walls, failed = {}, 0
for mode in ("root", "rootless"):
    for line in open(f"{out}/results-{mode}.jsonl"):
        r = json.loads(line)
        if r.get("phase") not in ("cold", "noop", "change"):
            continue
        if r.get("rc") != 0:
            failed += 1
            continue
        walls.setdefault((r["case"], r["phase"], mode), []).append(r["wall_s"])
print("| case | phase | n | root median ms | rootless median ms | ratio |")
print("| --- | --- | --- | --- | --- | --- |")
for case in cases:
    for phase in ("cold", "noop", "change"):
        a, b = walls.get((case, phase, "root")), walls.get((case, phase, "rootless"))
        if not a or not b:
            print(f"| {case} | {phase} | - | - | - | - |")
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {case} | {phase} | {min(len(a), len(b))} | {ma * 1000:.1f} | {mb * 1000:.1f} | {mb / ma:.2f} |")
if failed:
    print(f"\n{failed} builds failed (see the logs named in the results)")
PY
