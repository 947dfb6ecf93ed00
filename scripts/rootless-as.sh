#!/usr/bin/env bash
# Runs one `rbuild build ... CONTEXT` as an unprivileged user (rootless mode), for harnesses that
# run as root and call $RBUILD (the shared conformance suite, the bench):
#   RBUILD=scripts/rootless-as.sh ROOTLESS_USER=u ROOTLESS_BIN=/path/rbuild \
#     ../shared/conformance/run.sh --builder rbuild
# The user needs a /etc/subuid and /etc/subgid range, and must be able to execute ROOTLESS_BIN.
# The context (last argument) is copied into the user's scratch dir and owned by the user, as a
# rootless user's own context would be (set-id bits, which chown clears, are restored); an
# `--output type=oci,dest=D` is written there and copied to D. State: $ROOTLESS_HOME/rootless-root;
# DOCKER_CONFIG, when set, is passed on (the user must be able to read it).
set -euo pipefail
U=${ROOTLESS_USER:?set ROOTLESS_USER} BIN=${ROOTLESS_BIN:?set ROOTLESS_BIN}
HOME_DIR=${ROOTLESS_HOME:-$(getent passwd "$U" | cut -d: -f6)}
H=$HOME_DIR/rootless-as
ctx="${*: -1}"
args=() dest=""
for a in "${@:1:$#-1}"; do
  if [[ $a == type=oci,dest=* ]]; then dest=${a#type=oci,dest=}; a="type=oci,dest=$H/out.tar"; fi
  args+=("${a//$ctx/$H/ctx}")
done
rm -rf "$H"; mkdir -p "$H"; cp -a "$ctx" "$H/ctx"; chown -R "$U:" "$H"
(cd "$ctx" && find . \( -perm -4000 -o -perm -2000 \) -print0) |
  while IFS= read -r -d '' f; do chmod --reference="$ctx/$f" "$H/ctx/$f"; done
rc=0
setpriv --reuid "$U" --regid "$(id -g "$U")" --init-groups -- \
  env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$HOME_DIR" ${DOCKER_CONFIG:+DOCKER_CONFIG="$DOCKER_CONFIG"} \
  "$BIN" --root "$HOME_DIR/rootless-root" "${args[@]}" "$H/ctx" || rc=$?
if [[ -n $dest && -e $H/out.tar ]]; then cp "$H/out.tar" "$dest"; fi
exit $rc
