#!/usr/bin/env bash
# Usage: arm64-debs.sh [DIR]
# Fetches Debian's busybox-static for arm64 (the arm64 test base image; see
# crates/testsupport/src/arm64.rs) into DIR (default $RBUILD_DEB_CACHE, else
# /var/cache/rbuild-test/debs) without installing it: adds the arm64 architecture to dpkg and
# refreshes apt's lists only when needed, downloads only when no copy is there. Idempotent;
# nothing comes from outside the Debian archive.
set -euo pipefail
dir=${1:-${RBUILD_DEB_CACHE:-/var/cache/rbuild-test/debs}}
mkdir -p "$dir"
if compgen -G "$dir/busybox-static_*_arm64.deb" >/dev/null; then
  exit 0
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "adding the arm64 architecture to dpkg (for apt-get download busybox-static:arm64)" >&2
  dpkg --add-architecture arm64
  apt-get update -qq
fi
# apt-get download fails when the lists predate the architecture: refresh once and retry.
(cd "$dir" && apt-get download -q busybox-static:arm64 >/dev/null 2>&1) || {
  apt-get update -qq
  (cd "$dir" && apt-get download -q busybox-static:arm64 >/dev/null)
}
ls "$dir"/busybox-static_*_arm64.deb >&2
