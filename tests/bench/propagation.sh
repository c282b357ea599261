#!/usr/bin/env bash
# A→B propagation between two devices of one account, each with its own
# real mount, against a real `nimbus serve` on loopback:
#
#  1. latency: N small writes (default 200) on A, each a unique token in a
#     new file; for each, the time until B reads that token (B polls every
#     2 ms). Prints p50, p90, p99 and max in ms.
#  2. burst: `cp -r` of 10,000 files of 4 KiB (from local disk) into A;
#     the time from the start of the copy until all of them are on B with
#     their size (B lists the folder every 250 ms), and how long A's
#     `nimbus sync --wait` took after the copy.
#
# Targets on loopback (issue 8): p50 ≤ 150 ms, p99 ≤ 500 ms, burst ≤ 20 s.
#
# Usage: tests/bench/propagation.sh [WRITES] [BURST_FILES]
# Env:   NIMBUS_BIN (default $CARGO_TARGET_DIR or target, release; built if missing)
#        KEEP=1     keep the temp dir (logs) for inspection
set -euo pipefail
WRITES=${1:-200}
BURST=${2:-10000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/bench/nimbus_env.sh
. "$ROOT/tests/bench/nimbus_env.sh"
nb_resolve_bin "$ROOT"

T=$(mktemp -d /tmp/nimbus-prop.XXXXXX)
SERVER_PID=
cleanup() {
  local m pid
  for m in "$T/a/mnt" "$T/b/mnt"; do
    if mountpoint -q "$m" 2>/dev/null; then
      timeout 60 "$NB_BIN" unmount "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null || true
    fi
  done
  for pid in ${MOUNT_PIDS:-}; do
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_port)
URL=http://127.0.0.1:$PORT
"$NB_BIN" serve --listen "127.0.0.1:$PORT" --data "$T/server" </dev/null >>"$T/server.log" 2>&1 &
SERVER_PID=$!
wait_until 30 curl -fsS "$URL/healthz"
echo bench-password | "$NB_BIN" admin user add bench --password-stdin --data "$T/server" >/dev/null 2>&1

MOUNT_PIDS=
for dev in a b; do
  mkdir -p "$T/$dev/mnt"
  echo bench-password | NIMBUS_CONFIG_DIR=$T/$dev/config \
    "$NB_BIN" login "$URL" --user bench --password-stdin --device "$dev" >/dev/null
  NIMBUS_CONFIG_DIR=$T/$dev/config "$NB_BIN" mount "$T/$dev/mnt" --cache-dir "$T/$dev/cache" \
    </dev/null >>"$T/$dev/mount.log" 2>&1 &
  MOUNT_PIDS="$MOUNT_PIDS $!"
  wait_until 30 mountpoint -q "$T/$dev/mnt"
done
A=$T/a/mnt B=$T/b/mnt
push_connected() { # MNT
  NIMBUS_CONFIG_DIR=$T/b/config "$NB_BIN" status "$1" --json |
    python3 -c 'import json,sys; sys.exit(0 if (json.load(sys.stdin).get("push") or {}).get("connected") else 1)'
}
wait_until 30 push_connected "$A"
wait_until 30 push_connected "$B"

echo "# nimbus propagation bench, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r)"
echo "# binary: $NB_BIN"

# 1. Latency of small writes.
mkdir "$A/lat"
wait_until 30 test -d "$B/lat"
python3 - "$A/lat" "$B/lat" "$WRITES" <<'PY'
import math, os, sys, time
a, b, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
lat = []
for i in range(n):
    token = f"token-{i}-{time.time_ns()}".encode()
    name = f"w{i:05d}"
    t0 = time.monotonic()
    with open(os.path.join(a, name), "wb") as f:
        f.write(token)
    deadline = t0 + 30
    while True:
        try:
            with open(os.path.join(b, name), "rb") as f:
                if f.read() == token:
                    break
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"write {i} did not reach B within 30 s")
        time.sleep(0.002)
    lat.append((time.monotonic() - t0) * 1000)
lat.sort()
def pct(p):  # nearest rank
    return lat[max(0, math.ceil(p / 100 * len(lat)) - 1)]
print(f"latency_writes {n}")
for p in (50, 90, 99):
    print(f"latency_p{p}_ms {pct(p):.0f}")
print(f"latency_max_ms {lat[-1]:.0f}")
PY

# 2. Burst: cp -r of many small files.
mkdir -p "$T/src/burst"
python3 - "$T/src/burst" "$BURST" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(os.urandom(4096))
PY
sync
start=$(date +%s.%N)
cp -r "$T/src/burst" "$A/burst"
copied=$(date +%s.%N)
(NIMBUS_CONFIG_DIR=$T/a/config "$NB_BIN" sync --wait "$A" --timeout 600s >/dev/null 2>&1
  echo "$(date +%s.%N)" >"$T/uploaded") &
UPLOAD_WAIT=$!
python3 - "$B/burst" "$BURST" "$start" <<'PY'
import os, sys, time
d, n, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.time() + 600
while True:
    try:
        done = sum(1 for e in os.scandir(d) if e.stat().st_size == 4096)
    except FileNotFoundError:
        done = 0
    if done >= n:
        break
    if time.time() > deadline:
        sys.exit(f"burst: only {done} of {n} files on B after 600 s")
    time.sleep(0.25)
print(f"burst_files {n}")
print(f"burst_complete_on_b_s {time.time() - start:.1f}")
PY
wait "$UPLOAD_WAIT"
python3 -c "import sys; s,c,u=map(float,sys.argv[1:]); print(f'burst_cp_s {c-s:.1f}'); print(f'burst_uploaded_s {u-s:.1f}')" \
  "$start" "$copied" "$(cat "$T/uploaded")"
