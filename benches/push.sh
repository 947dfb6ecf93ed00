#!/usr/bin/env bash
# Usage: benches/push.sh [CASE...]        (default: big-file many-files)
#   Push benchmark: `rbuild push` vs `skopeo copy oci:STORE:TAG docker://...` of the same image
#   (built once by rbuild from the context of SHARED/bench/cases/CASE) to a fresh docker-registry on
#   127.0.0.1:$PORT, REPS times each (alternating, a new empty registry for every push); prints
#   the medians and the ratio rbuild/skopeo, and checks both pushes give the store's image (its
#   config): the store keeps built layers uncompressed, both tools push them gzip-compressed
#   (rbuild compresses once and reuses the variant; the first rep includes that compression).
# Env: RBUILD (default target/release/rbuild)  REPS=3  PORT=5101
#      RBUILD_SHARED (default ../shared, next to the repository; as the tests)
#      BENCH_STATE=/var/lib/rbuild-bench (contexts from cases/gen.sh; push store in $BENCH_STATE/push-root)
# Needs: the bench base registry on 127.0.0.1:5000 with busybox (SHARED/bench/setup.sh),
#        contexts (SHARED/bench/cases/gen.sh big-file many-files), docker-registry, skopeo.
set -euo pipefail
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && { sed -n '2,11p' "$0"; exit 0; }
HERE=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${RBUILD_SHARED:-$HERE/../shared}
RBUILD=${RBUILD:-$HERE/target/release/rbuild}
REPS=${REPS:-3}
PORT=${PORT:-5101}
STATE=${BENCH_STATE:-/var/lib/rbuild-bench}
ROOT=$STATE/push-root
CASES=("$@"); ((${#CASES[@]})) || CASES=(big-file many-files)
log() { printf '[push-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ -x $RBUILD ]] || { echo "no rbuild binary at $RBUILD (cargo build --release -p rbuild)" >&2; exit 3; }
command -v skopeo >/dev/null || { echo "skopeo missing" >&2; exit 3; }
REGBIN=$(command -v docker-registry || echo /usr/bin/docker-registry)
[[ -x $REGBIN ]] || { echo "docker-registry missing" >&2; exit 3; }
curl -sf -o /dev/null http://127.0.0.1:5000/v2/busybox/tags/list ||
  { echo "base registry 127.0.0.1:5000 with busybox not up: run $SHARED/bench/setup.sh" >&2; exit 3; }

WORK=$(mktemp -d /tmp/rbuild-push-bench.XXXXXX)
REG_PID=
stop_registry() {
  if [[ -n $REG_PID ]]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; REG_PID=; fi
  rm -rf "$WORK/registry"
}
trap 'stop_registry; rm -rf "$WORK"' EXIT

start_registry() {
  stop_registry
  mkdir -p "$WORK/registry/data"
  cat > "$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
EOF
  "$REGBIN" serve "$WORK/registry/config.yml" > "$WORK/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/v2/" && return 0
    sleep 0.05
  done
  echo "registry on $PORT did not start:" >&2; cat "$WORK/registry.log" >&2; exit 1
}

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
remote_digest() {
  skopeo --insecure-policy inspect --tls-verify=false --no-tags "docker://$1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Digest"])'
}
remote_config() {
  skopeo --insecure-policy inspect --raw --tls-verify=false "docker://$1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["config"]["digest"])'
}

for c in "${CASES[@]}"; do
  ctx=$STATE/contexts/$c
  [[ -f $ctx/Dockerfile ]] || { echo "no context $ctx: run $SHARED/bench/cases/gen.sh $c" >&2; exit 3; }
  tag=127.0.0.1:$PORT/push/$c:latest
  log "$c: building with rbuild (untimed)"
  "$RBUILD" --root "$ROOT" build --progress=plain -t "$tag" --network=host "$ctx" > "$WORK/build.log" 2>&1 ||
    { cat "$WORK/build.log" >&2; exit 1; }
  want=$(python3 - "$ROOT/index.json" "$tag" <<'PY'
import json, sys
idx = json.load(open(sys.argv[1]))
print(next(m["digest"] for m in idx["manifests"]
           if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]))
PY
)
  size=$(python3 - "$ROOT" "$want" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/blobs/sha256/{sys.argv[2].split(':')[1]}"))
print(sum(l["size"] for l in m["layers"]) + m["config"]["size"])
PY
)
  config=$(python3 - "$ROOT" "$want" <<'PY'
import json, sys
print(json.load(open(f"{sys.argv[1]}/blobs/sha256/{sys.argv[2].split(':')[1]}"))["config"]["digest"])
PY
)
  log "$c: image $want, $((size / 1048576)) MiB of blobs (uncompressed in the store)"
  : > "$WORK/rbuild.times"; : > "$WORK/skopeo.times"
  for rep in $(seq "$REPS"); do
    start_registry
    t0=$(now)
    "$RBUILD" --root "$ROOT" push "$tag" > "$WORK/push.out" 2> "$WORK/push.err" ||
      { cat "$WORK/push.err" >&2; exit 1; }
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", b-a}' >> "$WORK/rbuild.times"
    got=$(remote_digest "$tag"); printed=$(tail -1 "$WORK/push.out")
    [[ $got == "$printed" ]] || { echo "rbuild printed $printed, registry has $got" >&2; exit 1; }
    [[ $(remote_config "$tag") == "$config" ]] || { echo "rbuild pushed another config" >&2; exit 1; }
    log "$c rep $rep: rbuild push $(tail -1 "$WORK/rbuild.times")s ($(grep -m1 pushed "$WORK/push.err"))"

    start_registry
    t0=$(now)
    skopeo --insecure-policy copy -q --dest-tls-verify=false \
      "oci:$ROOT:$tag" "docker://$tag" > "$WORK/skopeo.out" 2>&1 ||
      { cat "$WORK/skopeo.out" >&2; exit 1; }
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", b-a}' >> "$WORK/skopeo.times"
    [[ $(remote_config "$tag") == "$config" ]] || { echo "skopeo pushed another config" >&2; exit 1; }
    log "$c rep $rep: skopeo copy $(tail -1 "$WORK/skopeo.times")s"
  done
  stop_registry
  r=$(median < "$WORK/rbuild.times"); s=$(median < "$WORK/skopeo.times")
  printf '%-12s blobs %6d MiB  rbuild push median %7.2fs  skopeo copy median %7.2fs  ratio rbuild/skopeo %.2f  (rbuild: %s; skopeo: %s)\n' \
    "$c" $((size / 1048576)) "$r" "$s" "$(awk -v a="$r" -v b="$s" 'BEGIN{print a/b}')" \
    "$(tr '\n' ' ' < "$WORK/rbuild.times" | sed 's/ $//')" "$(tr '\n' ' ' < "$WORK/skopeo.times" | sed 's/ $//')"
done
