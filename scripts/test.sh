#!/usr/bin/env bash
# Runs the gates and the whole test suite. Installs the Debian packages the end-to-end tests use
# when missing (scripts/test-deps.txt: docker-registry, skopeo, umoci, busybox-static, zstd and gzip to check layers,
# curl, python3, slirp4netns for the default network, uidmap for rootless tests, gcc + libc6-dev for the attack suite's
# static probe, libseccomp-dev + pkg-config to build the sandbox, qemu-user-static for RUNs of a
# foreign architecture, and Debian's arm64 busybox-static .deb through scripts/arm64-debs.sh)
# and the rustfmt and clippy components, then runs, cheapest
# first: `cargo fmt --check`, clippy with warnings as errors, rustdoc with warnings as errors,
# and cargo test. Arguments go to the test binaries (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in $(grep -v '^#' scripts/test-deps.txt); do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing test dependencies: ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
./scripts/arm64-debs.sh
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

gate() {
  local name=$1 start=$SECONDS
  shift
  echo "== $name" >&2
  "$@"
  echo "== $name: ok ($((SECONDS - start)) s)" >&2
}
gate "format" cargo fmt --all --check
gate "clippy" cargo clippy --workspace --all-targets -- -D warnings
gate "rustdoc" env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
cargo build -p rbuild
cargo test --workspace -- --test-threads=2 "$@"
