#!/usr/bin/env bash
# Usage: packaging/container/prepare-context.sh OUT_DIR [RBUILD_BINARY]
#   Prepares the build context of the rbuild container image in OUT_DIR (emptied first):
#   the Dockerfile, and rootfs/ with the rbuild binary (default target/release/rbuild,
#   stripped of debug info), Debian's setuid newuidmap/newgidmap (package uidmap) and every
#   shared library these three need (found with ldd, copied under the path ldd names). The
#   image itself is then built by rbuild:
#     rbuild build -t rbuild:local --build-arg BASE=127.0.0.1:5000/busybox:latest OUT_DIR
#   newuidmap/newgidmap get file capabilities (cap_setuid, cap_setgid) in a RUN of the image
#   build instead of their setuid bit (see docs/container.md): tools/ holds setcap for it.
set -euo pipefail
[[ "${1:-}" == "-h" || "${1:-}" == "--help" || $# -lt 1 ]] && { sed -n '2,10p' "$0"; exit 0; }
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$1
BIN=${2:-$HERE/../../target/release/rbuild}
[[ -x $BIN ]] || { echo "rbuild binary not found: $BIN (cargo build --release -p rbuild)" >&2; exit 1; }
for tool in newuidmap newgidmap; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install uidmap" >&2; exit 1; }
done
rm -rf "$OUT"
mkdir -p "$OUT/rootfs/usr/local/bin" "$OUT/rootfs/usr/bin"
cp "$HERE/Dockerfile" "$OUT/Dockerfile"
ROOTFS=$OUT/rootfs

# The binary without its debug sections (a debug build is ~5x larger with them).
objcopy --strip-debug "$BIN" "$ROOTFS/usr/local/bin/rbuild"
chmod 0755 "$ROOTFS/usr/local/bin/rbuild"
for tool in newuidmap newgidmap; do
  install -m 0755 "$(command -v "$tool")" "$ROOTFS/usr/bin/$tool"
done
# setcap (libcap2-bin) and its libcap, for the RUN that gives newuidmap/newgidmap their file
# capabilities (bind-mounted there, so they stay out of the image).
SETCAP=$(command -v setcap || echo /usr/sbin/setcap)
[[ -x $SETCAP ]] || { echo "setcap not found: apt-get install libcap2-bin" >&2; exit 1; }
mkdir -p "$OUT/tools/lib"
cp "$SETCAP" "$OUT/tools/setcap"
ldd "$SETCAP" | awk '$1 ~ /^libcap\.so/ && $3 ~ /^\// {print $3}' | xargs -r -I{} cp -L {} "$OUT/tools/lib/"

# Shared libraries (and the dynamic loader) of the three binaries, under the paths ldd names;
# symlinks are resolved so each name is a regular file.
for exe in "$ROOTFS/usr/local/bin/rbuild" "$ROOTFS/usr/bin/newuidmap" "$ROOTFS/usr/bin/newgidmap"; do
  ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
  chmod 0755 "$ROOTFS$lib"
done
# (No chown -R here: it would clear the setuid bits. COPY gives context files 0:0 anyway.)
echo "context ready: $OUT ($(du -sh "$OUT" | cut -f1))" >&2
