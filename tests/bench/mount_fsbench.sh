#!/usr/bin/env bash
# Runs ../shared/bench/fsbench.sh (or $FSBENCH) against a fresh Nimbus mount:
# a real `nimbus serve` on loopback, one logged-in device, cold steps
# remount with an empty client cache. Prints fsbench's "metric value unit"
# lines, plus how long the upload queue took to drain after each write phase
# (FLUSH_CMD = `nimbus sync --wait`).
#
# Usage: tests/bench/mount_fsbench.sh [SCALE]     (SCALE as fsbench.sh; default 1)
# Env:   NIMBUS_BIN (default target/release/nimbus, built if missing)
#        FSBENCH    (default ../shared/bench/fsbench.sh next to the repo)
#        KEEP=1     keep the temp dir for inspection
set -euo pipefail
SCALE=${1:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FSBENCH=${FSBENCH:-$ROOT/../shared/bench/fsbench.sh}
BIN=${NIMBUS_BIN:-$ROOT/target/release/nimbus}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet)
[ -f "$FSBENCH" ] || { echo "fsbench.sh not found at $FSBENCH (set FSBENCH)" >&2; exit 2; }

T=$(mktemp -d /tmp/nimbus-bench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export NIMBUS_CONFIG_DIR=$T/config
MNT=$T/mnt; CACHE=$T/cache; mkdir -p "$MNT"
SERVER_PID=; MOUNT_PID=

cleanup() {
  [ -n "$MOUNT_PID" ] && { "$BIN" unmount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; wait "$MOUNT_PID" 2>/dev/null || true; }
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$T"
}
trap cleanup EXIT

wait_until() { # SECONDS CMD...
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out: $*" >&2; return 1; }
    sleep 0.05
  done
}

"$BIN" serve --listen 127.0.0.1:$PORT --data "$T/server" 2>"$T/server.log" & SERVER_PID=$!
wait_until 30 curl -fsS "http://127.0.0.1:$PORT/healthz"
echo bench-password | "$BIN" admin user add bench --password-stdin --data "$T/server"
echo bench-password | "$BIN" login "http://127.0.0.1:$PORT" --user bench --password-stdin --device bench >/dev/null

mount_it() {
  "$BIN" mount "$MNT" --cache-dir "$CACHE" 2>>"$T/mount.log" & MOUNT_PID=$!
  wait_until 30 mountpoint -q "$MNT"
}
export -f wait_until
mount_it

# Cold: wait for uploads, unmount, drop the client cache (keeping the
# device's metadata so listings stay local), remount.
export NIMBUS_BIN=$BIN MNT CACHE T
cat > "$T/cold.sh" <<COLD
set -e
"$BIN" sync --wait "$MNT" --timeout 600s
"$BIN" unmount "$MNT"
while mountpoint -q "$MNT"; do sleep 0.05; done
while pgrep -f -- "mount $MNT --cache-dir" >/dev/null; do sleep 0.05; done
rm -rf "$CACHE/chunks"
"$BIN" mount "$MNT" --cache-dir "$CACHE" --daemon >/dev/null
COLD
# After the first cold step the mount runs as a daemon; track it by mountpoint.
PRE_COLD_CMD="bash $T/cold.sh" \
FLUSH_CMD="$BIN sync --wait $MNT --timeout 600s" \
  bash "$FSBENCH" "$MNT" "$SCALE"
MOUNT_PID=
"$BIN" unmount "$MNT" || true
