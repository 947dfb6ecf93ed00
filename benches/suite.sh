#!/usr/bin/env bash
# Usage: benches/suite.sh [BUILDERS] [CASES]
#   The peer benchmark of issue 11: SHARED/bench/run-suite.sh with rbuild beside BuildKit (and
#   buildah if asked), same run, builders interleaved per case, REPS repetitions (default 3), then
#   the markdown table (median wall times cold/no-op/change, peak RSS, image sizes).
#   Defaults: BUILDERS="buildkit rbuild", CASES="small chain multistage-sleep cutoff debian-app
#   many-files big-file". Prints the table and the rbuild/BuildKit ratio per case and phase.
#
#   rbuild's cold phase starts like BuildKit's: dockerd keeps its base images (busybox, debian)
#   in its image store while `docker builder prune -af` clears the build cache, so rbuild's root
#   keeps pulled bases too: they are pulled once into the root before timing, and each cold
#   phase untags the bench images and runs `rbuild prune -f` (build results, not unpacked bases).
# Env: RBUILD (default target/release/rbuild)  RBUILD_ROOT (default $BENCH_STATE/rbuild-root)
#      REPS=3  RBUILD_SHARED (default ../shared next to the repository)
#      BENCH_STATE=/var/lib/rbuild-bench  NOTES (where run-suite.sh writes; default a fresh
#      directory under $BENCH_STATE/report-rbuild-<time>)
# Needs: root, Debian packages the shared setup.sh installs (it runs it: docker.io, registry).
set -euo pipefail
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && { sed -n '2,18p' "$0"; exit 0; }
HERE=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${RBUILD_SHARED:-$HERE/../shared}
BUILDERS=${1:-buildkit rbuild}
CASES=${2:-small chain multistage-sleep cutoff debian-app many-files big-file}
STATE=${BENCH_STATE:-/var/lib/rbuild-bench}
export RBUILD=${RBUILD:-$HERE/target/release/rbuild}
export RBUILD_ROOT=${RBUILD_ROOT:-$STATE/rbuild-root}
export NOTES=${NOTES:-$STATE/report-rbuild-$(date +%Y%m%d-%H%M%S)}
export REPS=${REPS:-3}
[[ -x $RBUILD ]] || { echo "no rbuild binary at $RBUILD (cargo build --release -p rbuild)" >&2; exit 3; }
[[ -d $SHARED/bench ]] || { echo "no shared bench at $SHARED/bench (set RBUILD_SHARED)" >&2; exit 3; }
mkdir -p "$NOTES"

"$SHARED/bench/setup.sh" >&2
if [[ " $BUILDERS " == *" rbuild "* ]]; then
  for base in busybox:latest debian:bookworm; do
    "$RBUILD" pull -q "127.0.0.1:5000/$base" >/dev/null
  done
fi
# The cold phase of rbuild: untag every bench image, then remove build results (bases stay).
export RBUILD_PRUNE_CMD='
  names=$("$RBUILD" images --format json | python3 -c "
import json, sys
for line in sys.stdin:
    i = json.loads(line)
    if i[\"Repository\"].startswith(\"rbuild-bench/\"):
        print(i[\"Repository\"] + \":\" + i[\"Tag\"])")
  [[ -z $names ]] || "$RBUILD" rmi -f $names >/dev/null
  "$RBUILD" prune -f >/dev/null'

"$SHARED/bench/run-suite.sh" "$BUILDERS" "$CASES"
table=$NOTES/peer-results-table.md
cat "$table"
python3 - "$NOTES/peer-results.jsonl" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("phase") in ("cold", "noop", "change") and r.get("rc") == 0:
        rows.setdefault((r["case"], r["phase"], r["builder"]), []).append(r["wall_s"])
print("\n| case | phase | rbuild s | buildkit s | ratio |\n| --- | --- | --- | --- | --- |")
for (case, phase, builder), walls in sorted(rows.items()):
    if builder != "rbuild":
        continue
    peer = rows.get((case, phase, "buildkit"))
    mine = statistics.median(walls)
    if peer:
        theirs = statistics.median(peer)
        print(f"| {case} | {phase} | {mine:.3f} | {theirs:.3f} | {mine / theirs:.2f} |")
    else:
        print(f"| {case} | {phase} | {mine:.3f} | - | - |")
PY
