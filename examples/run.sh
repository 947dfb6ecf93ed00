#!/usr/bin/env bash
# The main job: builds rbuild, makes a busybox root filesystem tarball, builds examples/hello into
# the local store (RBUILD_ROOT, default /var/lib/rbuild), lists the store and shows the result.
set -euo pipefail
cd "$(dirname "$0")/.."
# The sandbox links libseccomp (Debian's libseccomp-dev) for its seccomp filter.
need=()
for pkg in libseccomp-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]} (Debian packages) to build rbuild" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -p rbuild
# RUN steps get a private network through slirp4netns (Debian's package), as BuildKit's default.
if ! command -v slirp4netns >/dev/null 2>&1; then
  echo "installing slirp4netns (Debian package) for the default RUN network" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slirp4netns >/dev/null
fi
./scripts/busybox-rootfs.sh examples/hello/rootfs.tar
rbuild=target/release/rbuild
"$rbuild" build -t rbuild-example/hello:latest --progress=plain examples/hello
"$rbuild" images
out=$(mktemp -d)
"$rbuild" build -t rbuild-example/hello:latest --progress=plain --output "type=local,dest=$out" examples/hello 2>/dev/null
echo "--- /app/greeting.txt of the built image:"
cat "$out/app/greeting.txt"
rm -rf "$out"
