#!/usr/bin/env bash
# Runs ../shared/bench/fsbench.sh (or $FSBENCH) against native disk, an
# rclone mount of a local folder and a Nimbus mount in one run, rounds
# interleaved (round 1: native, rclone, nimbus; round 2: ...), and prints
# one markdown table: per metric the median (min–max) of each target and
# how Nimbus compares. Then, on Nimbus only, a counting pass that noise
# cannot move: FUSE requests, fsync-family syscalls of the mount process
# and HTTP requests to the server, per file, for creating, cold-reading and
# deleting COST_N small files (uploads drained in each phase).
#
# Usage: tests/bench/compare.sh [SCALE]      (SCALE as fsbench.sh; default 1)
# Env:   ROUNDS=3                  rounds of every target
#        TARGETS="native rclone nimbus"   which targets, in this order per round
#        NIMBUS_BIN                Nimbus binary (default target/release/nimbus, or
#                                  $CARGO_TARGET_DIR/release/nimbus; built if missing)
#        NATIVE_DIR=/tmp           the native target runs in a fresh dir below it
#        COST_N=1000               files of the counting pass (0 skips it; it
#                                  runs only when nimbus is among TARGETS)
#        FSBENCH                   default ../shared/bench/fsbench.sh next to the repo
#        FSBENCH_BUDGET ...        passed through to fsbench.sh (as are SKIP, SEQ_MIB, ...)
#        RESULTS_DIR               where raw per-round results go (default a temp dir,
#                                  removed at the end unless KEEP=1)
#        KEEP=1                    keep the results and work dirs (the results dir also
#                                  gets every round's server, mount and rclone logs)
# Needs root (fsbench drops the kernel caches); installs rclone and strace
# with apt-get if missing. Every mount and process it starts is stopped on
# exit, Ctrl-C included.
#
# Targets:
#   native  a fresh directory on the filesystem of NATIVE_DIR; no hooks.
#   rclone  `rclone mount SRC MNT --vfs-cache-mode full` of a local folder;
#           cold = wait for its uploads, unmount, wipe its cache, remount;
#           FLUSH_CMD = wait until its upload queue is empty (vfs/stats).
#   nimbus  `nimbus serve` on loopback + a logged-in device mount;
#           cold = `nimbus sync --wait`, unmount, wipe the chunk cache,
#           remount; FLUSH_CMD = `nimbus sync --wait` (see nimbus_env.sh).
set -euo pipefail
SCALE=${1:-1}
ROUNDS=${ROUNDS:-3}
TARGETS=${TARGETS:-native rclone nimbus}
COST_N=${COST_N:-1000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FSBENCH=${FSBENCH:-$ROOT/../shared/bench/fsbench.sh}
# shellcheck source=tests/bench/nimbus_env.sh
. "$ROOT/tests/bench/nimbus_env.sh"

log() { echo "[compare $(date +%T)] $*" >&2; }
[ -f "$FSBENCH" ] || { echo "fsbench.sh not found at $FSBENCH (set FSBENCH)" >&2; exit 2; }
for t in $TARGETS; do
  case $t in native | rclone | nimbus) ;; *) echo "unknown target: $t" >&2; exit 2 ;; esac
done
case " $TARGETS " in *" nimbus "*) WANT_NIMBUS=1 ;; *) WANT_NIMBUS=0 ;; esac
[ "$WANT_NIMBUS" = 1 ] || COST_N=0 # the counting pass is on Nimbus only
[ "$WANT_NIMBUS" = 0 ] || nb_resolve_bin "$ROOT"

need() { # COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  log "installing $2"
  apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y "$2" >/dev/null; }
}
case " $TARGETS " in *" rclone "*) need rclone rclone ;; esac
[ "$COST_N" -gt 0 ] && need strace strace
[ "$(id -u)" = 0 ] || log "WARN: not root: fsbench cannot drop caches, cold numbers are warm"

W=$(mktemp -d /tmp/nimbus-compare.XXXXXX) # mounts, caches, logs
RES=${RESULTS_DIR:-$W/results}
mkdir -p "$RES"
NATIVE_DIR=${NATIVE_DIR:-/tmp}

# ------------------------------------------------------------------ rclone
RC_DIR= RC_PORT=
rc_start() { # DIR
  RC_DIR=$1
  mkdir -p "$RC_DIR/src" "$RC_DIR/mnt"
  : >"$RC_DIR/rclone.conf"
  RC_PORT=$(free_port)
  cat >"$RC_DIR/mount.sh" <<EOF
rclone mount "$RC_DIR/src" "$RC_DIR/mnt" --vfs-cache-mode full --cache-dir "$RC_DIR/cache" \\
  --config "$RC_DIR/rclone.conf" --rc --rc-addr 127.0.0.1:$RC_PORT --rc-no-auth \\
  </dev/null >>"$RC_DIR/rclone.log" 2>&1 &
echo \$! >"$RC_DIR/rclone.pid"
for i in \$(seq 600); do mountpoint -q "$RC_DIR/mnt" && exit 0; sleep 0.05; done
echo "rclone did not mount" >&2; exit 1
EOF
  # Upload queue empty: nothing in progress or queued in the VFS cache.
  cat >"$RC_DIR/flush.sh" <<EOF
for i in \$(seq 12000); do
  n=\$(curl -fsS -X POST "http://127.0.0.1:$RC_PORT/vfs/stats" 2>/dev/null | python3 -c '
import json,sys
d=json.load(sys.stdin).get("diskCache",{})
print(d.get("uploadsInProgress",0)+d.get("uploadsQueued",0))' 2>/dev/null)
  [ "\$n" = 0 ] && exit 0
  sleep 0.05
done
echo "rclone uploads did not drain" >&2; exit 1
EOF
  cat >"$RC_DIR/cold.sh" <<EOF
set -e
bash "$RC_DIR/flush.sh"
pid=\$(cat "$RC_DIR/rclone.pid")
fusermount3 -u "$RC_DIR/mnt" 2>/dev/null || umount "$RC_DIR/mnt"
while kill -0 "\$pid" 2>/dev/null; do sleep 0.05; done
rm -rf "$RC_DIR/cache"
bash "$RC_DIR/mount.sh"
EOF
  bash "$RC_DIR/mount.sh"
}
rc_stop() {
  [ -n "$RC_DIR" ] || return 0
  local pid i
  pid=$(cat "$RC_DIR/rclone.pid" 2>/dev/null || true)
  if mountpoint -q "$RC_DIR/mnt" 2>/dev/null; then
    fusermount3 -u "$RC_DIR/mnt" 2>/dev/null || umount "$RC_DIR/mnt" 2>/dev/null ||
      fusermount3 -uz "$RC_DIR/mnt" 2>/dev/null || umount -l "$RC_DIR/mnt" 2>/dev/null || true
  fi
  if [ -n "$pid" ]; then
    for i in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill "$pid" 2>/dev/null || true
  fi
  RC_DIR=
}

# ------------------------------------------------------------------ cleanup
NATIVE_WORK= STRACE_PID=
cleanup() {
  set +e
  [ -z "$STRACE_PID" ] || kill "$STRACE_PID" 2>/dev/null
  rc_stop
  nb_stop
  [ -z "$NATIVE_WORK" ] || rm -rf "$NATIVE_WORK"
  if [ "${KEEP:-0}" = 1 ]; then log "kept $W (results: $RES)"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# ------------------------------------------------------------------ rounds
# keep_logs DIR NAME: the server's and the mount's logs (the foreground
# mount's, then the --daemon remounts' in the cache dir) into RES, and a
# note when they hold warnings or errors.
keep_logs() {
  local f n
  cp "$1/server.log" "$RES/$2.server.log" 2>/dev/null || true
  cat "$1/mount.log" "$1/cache/mount.log" >"$RES/$2.mount.log" 2>/dev/null || true
  for f in "$RES/$2.mount.log" "$RES/$2.server.log"; do
    n=$(grep -cE ' (WARN|ERROR) |panicked' "$f" 2>/dev/null || true)
    [ "${n:-0}" = 0 ] || log "note: $f has $n warning/error lines"
  done
}

run_round() { # TARGET ROUND
  local t=$1 r=$2 out="$RES/$1.$2.txt" dir="$W/$1.$2"
  log "round $r: $t"
  case $t in
    native)
      NATIVE_WORK=$(mktemp -d "$NATIVE_DIR/nimbus-compare-native.XXXXXX")
      bash "$FSBENCH" "$NATIVE_WORK" "$SCALE" >"$out" || log "WARN: fsbench rc=$? on $t"
      rm -rf "$NATIVE_WORK"
      NATIVE_WORK=
      ;;
    rclone)
      rc_start "$dir"
      PRE_COLD_CMD="bash $RC_DIR/cold.sh" FLUSH_CMD="bash $RC_DIR/flush.sh" \
        bash "$FSBENCH" "$RC_DIR/mnt" "$SCALE" >"$out" || log "WARN: fsbench rc=$? on $t"
      rc_stop
      cp "$dir/rclone.log" "$RES/$t.$r.rclone.log" 2>/dev/null || true
      ;;
    nimbus)
      nb_start "$dir"
      PRE_COLD_CMD="bash $(nb_cold_script)" FLUSH_CMD=$(nb_flush_cmd) \
        bash "$FSBENCH" "$NB_MNT" "$SCALE" >"$out" || log "WARN: fsbench rc=$? on $t"
      nb_stop
      keep_logs "$dir" "$t.$r"
      ;;
  esac
}

for r in $(seq "$ROUNDS"); do
  for t in $TARGETS; do run_round "$t" "$r"; done
done

[ "$WANT_NIMBUS" = 0 ] || { echo "Nimbus binary: $NB_BIN"; echo; }
[ "$ROUNDS" -gt 0 ] && echo "## fsbench, SCALE $SCALE, $ROUNDS rounds ($(date -u +%F), $(nproc) cores)" && echo &&
python3 - "$RES" "$TARGETS" "$ROUNDS" <<'PY'
import os, sys, statistics
res, targets, rounds = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
HIGHER = {"MiB/s", "files/s", "stat/s", "IOPS"}
LOWER = {"s"}
data, units, order = {}, {}, []
params = {}
for t in targets:
    for r in range(1, rounds + 1):
        p = os.path.join(res, f"{t}.{r}.txt")
        if not os.path.exists(p):
            continue
        for line in open(p):
            f = line.split()
            if len(f) != 3:
                continue
            m, v, u = f
            if u not in HIGHER and u not in LOWER:
                params.setdefault(m, {}).setdefault(t, set()).add(v)
                continue
            if m not in units:
                order.append(m)
            units[m] = u
            if v != "NA":
                data.setdefault(m, {}).setdefault(t, []).append(float(v))

def fmt(x):
    if x is None:
        return "NA"
    a = abs(x)
    if a >= 1000: return f"{x:.0f}"
    if a >= 100: return f"{x:.0f}"
    if a >= 10: return f"{x:.1f}"
    if a >= 1: return f"{x:.2f}"
    return f"{x:.3f}"

def cell(vs):
    if not vs:
        return "–"
    med = statistics.median(vs)
    if len(vs) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(vs))}–{fmt(max(vs))})"

def speed(m, nim, other):
    """Nimbus relative to other, >1 = Nimbus better, whatever the unit."""
    if not nim or not other:
        return None
    a, b = statistics.median(nim), statistics.median(other)
    if units[m] in HIGHER:
        return a / b if b > 0 else None
    return b / a if a > 0 else None

show = [t for t in ["native", "rclone", "nimbus"] if t in targets]
hdr = ["metric", "unit", "better"] + [f"{t} median (min–max)" for t in show]
cmp = "nimbus" in targets
if cmp and "native" in targets:
    hdr.append("Nimbus vs native (×, >1 = Nimbus better)")
if cmp and "rclone" in targets:
    hdr += ["Nimbus vs rclone (×, >1 = Nimbus better)", "Nimbus ahead of rclone?"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for m in order:
    u = units[m]
    d = data.get(m, {})
    row = [m, u, "higher" if u in HIGHER else "lower"] + [cell(d.get(t)) for t in show]
    if cmp and "native" in targets:
        s = speed(m, d.get("nimbus"), d.get("native"))
        row.append("NA" if s is None else f"{s:.2f}")
    if cmp and "rclone" in targets:
        nim, rc = d.get("nimbus"), d.get("rclone")
        s = speed(m, nim, rc)
        row.append("NA" if s is None else f"{s:.2f}")
        if s is None:
            row.append("NA")
        else:
            better = (lambda x, y: x > y) if u in HIGHER else (lambda x, y: x < y)
            worst_n = min(nim) if u in HIGHER else max(nim)
            best_n = max(nim) if u in HIGHER else min(nim)
            worst_r = min(rc) if u in HIGHER else max(rc)
            best_r = max(rc) if u in HIGHER else min(rc)
            apart = len(nim) > 1 and len(rc) > 1
            if apart and better(worst_n, best_r):
                row.append("**yes** (ranges apart)")
            elif apart and better(worst_r, best_n):
                row.append("**no** (ranges apart)")
            elif s > 1:
                row.append("yes")
            elif s < 1:
                row.append("no")
            else:
                row.append("tie")
    print("| " + " | ".join(row) + " |")
print()
print("Sizes: " + ", ".join(f"{m}={'/'.join(sorted(set().union(*v.values())))}" for m, v in params.items()
                            if not m.endswith("_ok")))
bad = [(t, v) for m, tv in params.items() if m.endswith("_ok") for t, vs in tv.items() for v in vs if v != "1"]
if bad:
    print("WARNING: a verification failed: " + ", ".join(f"{t}" for t, _ in bad))
print("Ratios compare medians; 'ranges apart' = every Nimbus round beat (or lost to) every rclone round.")
PY

# ------------------------------------------------------------------ counting pass
[ "$COST_N" -gt 0 ] || exit 0
echo
echo "## Per-file costs on Nimbus ($COST_N files of 4 KiB; counts, not timings)"
echo
log "counting pass: $COST_N files"

http_requests() { # total requests the server has answered, but scrapes of /metrics
  curl -fsS "$NB_URL/metrics" | awk '/^nimbus_http_requests_total[{ ]/ && !/route="\/metrics"/ { n += $NF } END { printf "%d\n", n }'
}
fuse_requests() {
  "$NB_BIN" status "$NB_MNT" --json 2>/dev/null |
    python3 -c 'import json,sys; v=json.load(sys.stdin).get("fuse_requests"); print("NA" if v is None else v)' 2>/dev/null || echo NA
}
# strace_start PHASE: attach to every thread of the mount process, counting
# fsync-family calls; returns once attached.
strace_start() {
  local pid i
  pid=$(nb_mount_pid)
  STRACE_OUT="$RES/strace.$1.txt"
  strace -f -c -e trace=fsync,fdatasync,sync_file_range,syncfs -o "$STRACE_OUT" -p "$pid" 2>>"$W/strace.log" &
  STRACE_PID=$!
  for i in $(seq 200); do # attached once every thread has a tracer
    if ! grep -h '^TracerPid:' /proc/"$pid"/task/*/status 2>/dev/null | grep -q 'TracerPid:[[:space:]]*0$'; then
      return 0
    fi
    sleep 0.05
  done
  log "WARN: strace did not attach to every thread of $pid"
}
strace_stop() { # sets SYNCS: the fsync-family calls strace counted
  kill -INT "$STRACE_PID" 2>/dev/null || true
  wait "$STRACE_PID" 2>/dev/null || true
  STRACE_PID=
  SYNCS=$(awk '$NF ~ /^(fsync|fdatasync|sync_file_range|syncfs)$/ { n += $4 } END { printf "%d\n", n }' "$STRACE_OUT")
  SYNC_SPLIT=$(awk -v n="$COST_N" '$NF ~ /^(fsync|fdatasync|sync_file_range|syncfs)$/ {
    printf "%s%s %.2f", sep, $NF, $4 / n; sep = ", " }' "$STRACE_OUT")
}
per_file() { awk -v a="$1" -v b="$2" -v n="$COST_N" 'BEGIN{ if (a=="NA" || b=="NA") print "NA"; else printf "%.2f\n", (b-a)/n }'; }

COSTS=()
phase() { # NAME SLUG CMD...: counts around CMD + the upload drain
  local name=$1 slug=$2 f0 h0 f1 h1
  shift 2
  f0=$(fuse_requests) h0=$(http_requests)
  strace_start "$slug"
  "$@"
  "$NB_BIN" sync --wait "$NB_MNT" --timeout 600s 2>/dev/null
  strace_stop
  f1=$(fuse_requests) h1=$(http_requests)
  COSTS+=("| $name | $(per_file "$f0" "$f1") | $(per_file 0 "$SYNCS")${SYNC_SPLIT:+ ($SYNC_SPLIT)} | $(per_file "$h0" "$h1") |")
  echo "$slug fuse_requests $f0 $f1 fsync_family $SYNCS http_requests $h0 $h1 files $COST_N" >>"$RES/costs.txt"
  log "phase $name: fuse $f0→$f1, fsync-family $SYNCS, http $h0→$h1"
}
create_files() {
  mkdir "$NB_MNT/cost"
  python3 - "$NB_MNT/cost" "$COST_N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(root, "f%05d" % i), "wb") as f:
        f.write(os.urandom(4096))
PY
}
read_files() {
  local b
  b=$(cd "$NB_MNT/cost" && find . -type f -print0 | xargs -0 cat | wc -c)
  [ "$b" = $((COST_N * 4096)) ] || log "WARN: cold read got $b bytes, want $((COST_N * 4096))"
}
remove_files() { rm -rf "$NB_MNT/cost"; }

nb_start "$W/cost"
COLD=$(nb_cold_script)
"$NB_BIN" sync --wait "$NB_MNT" --timeout 600s 2>/dev/null # the mount's own start-up requests
phase create create create_files
bash "$COLD"
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || log "WARN: cannot drop caches"
phase "read (cold)" read_cold read_files
phase "rm -rf" rm_rf remove_files
nb_stop
keep_logs "$W/cost" cost

echo "| phase (per file, upload drain included) | FUSE requests | fsync-family syscalls (mount process) | HTTP requests to the server |"
echo "|---|---|---|---|"
printf '%s\n' "${COSTS[@]}"
echo
echo "fsync-family = fsync, fdatasync, sync_file_range, syncfs (strace -f -c on the mount process);"
echo "HTTP = nimbus_http_requests_total deltas (scrapes of /metrics excluded); NA = the binary does not publish fuse_requests."
