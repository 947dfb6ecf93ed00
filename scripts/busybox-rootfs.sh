#!/usr/bin/env bash
# Usage: busybox-rootfs.sh OUT.tar
# Makes a root filesystem tarball from Debian's busybox-static: /bin/busybox, a symlink per applet,
# /etc/passwd, /etc/group, /tmp, /root. Deterministic (sorted, numeric owners, mtime 0).
set -euo pipefail
out=$1
if ! dpkg -s busybox-static >/dev/null 2>&1; then
  echo "installing busybox-static (Debian package)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"/{bin,etc,tmp,root,proc,sys,dev,usr/bin,sbin}
cp /bin/busybox "$tmp/bin/busybox"
for applet in $(/bin/busybox --list); do
  [[ $applet == busybox ]] || ln -sf busybox "$tmp/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$tmp/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$tmp/etc/group"
chmod 1777 "$tmp/tmp"; chmod 700 "$tmp/root"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$tmp" -cf "$out" .
