#!/usr/bin/env bash
# Warm sequential read: the same 1 GiB file read with `dd bs=1M` (as
# fsbench's seq_read_warm) from the kernel's page cache on native ext4
# (the disk under /tmp), on tmpfs (an in-memory file system without large
# folios, the same page-cache path a FUSE file takes) and on a Nimbus
# mount, rounds interleaved. Prints per target the median (min–max) in
# MiB/s, the ratios, and the FUSE requests one warm read of the Nimbus
# file costs (from the fuse:fuse_request_send tracepoint; 0 READs means
# the page cache served every byte).
#
# Usage: tests/bench/warm_read.sh [ROUNDS] [MIB]     (default 5 rounds, 1024 MiB)
# Env:   NIMBUS_BIN (default $CARGO_TARGET_DIR or target, release; built if missing)
#        NATIVE_DIR=/tmp  where the native copy goes (must not be tmpfs)
# Needs root (tracepoint; /dev/shm for tmpfs).
set -euo pipefail
ROUNDS=${1:-5}
MIB=${2:-1024}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/bench/nimbus_env.sh
. "$ROOT/tests/bench/nimbus_env.sh"
nb_resolve_bin "$ROOT"

T=$(mktemp -d "${NATIVE_DIR:-/tmp}/nimbus-warm.XXXXXX")
SHM=$(mktemp -d /dev/shm/nimbus-warm.XXXXXX)
TRACE=/sys/kernel/tracing
cleanup() {
  [ -e "$TRACE/events/fuse/fuse_request_send/enable" ] &&
    echo 0 >"$TRACE/events/fuse/fuse_request_send/enable" 2>/dev/null || true
  nb_stop 2>/dev/null || true
  rm -rf "$T" "$SHM"
}
trap cleanup EXIT

nb_start "$T/nimbus" || { echo "warm_read: cannot start Nimbus" >&2; exit 1; }
head -c "${MIB}M" /dev/urandom >"$T/seq.bin"
cp "$T/seq.bin" "$SHM/seq.bin"
cp "$T/seq.bin" "$NB_MNT/seq.bin"
"$NB_BIN" sync --wait "$NB_MNT" --timeout 600s >/dev/null
sync

# MiB/s of one dd of FILE.
read_rate() {
  local s e
  s=$(date +%s.%N)
  dd if="$1" of=/dev/null bs=1M status=none
  e=$(date +%s.%N)
  python3 -c "print(round($MIB / ($e - $s)))"
}

declare -A RATES=([native]="" [tmpfs]="" [nimbus]="")
declare -A FILES=([native]="$T/seq.bin" [tmpfs]="$SHM/seq.bin" [nimbus]="$NB_MNT/seq.bin")
for t in native tmpfs nimbus; do read_rate "${FILES[$t]}" >/dev/null; done # warm every cache
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for t in native tmpfs nimbus; do
    rate=$(read_rate "${FILES[$t]}")
    RATES[$t]+="$rate "
    line+=" $t $rate"
  done
  echo "$line" >&2
done

python3 - "${RATES[native]}" "${RATES[tmpfs]}" "${RATES[nimbus]}" "$MIB" "$ROUNDS" <<'PY'
import statistics, sys
native, tmpfs, nimbus = ([int(x) for x in a.split()] for a in sys.argv[1:4])
mib, rounds = sys.argv[4], sys.argv[5]
def cell(v):
    return f"{statistics.median(v):.0f} ({min(v)}–{max(v)})"
print(f"warm sequential read, {mib} MiB, dd bs=1M, median (min–max) of {rounds} interleaved rounds, MiB/s")
print("| native ext4 | tmpfs | Nimbus | Nimbus / native | Nimbus / tmpfs |")
print("|---|---|---|---|---|")
m = statistics.median
print(f"| {cell(native)} | {cell(tmpfs)} | {cell(nimbus)} | {m(nimbus)/m(native):.2f} | {m(nimbus)/m(tmpfs):.2f} |")
PY

if [ -w "$TRACE/events/fuse/fuse_request_send/enable" ]; then
  echo >"$TRACE/trace"
  echo 1 >"$TRACE/events/fuse/fuse_request_send/enable"
  dd if="$NB_MNT/seq.bin" of=/dev/null bs=1M status=none
  echo 0 >"$TRACE/events/fuse/fuse_request_send/enable"
  total=$(grep -c fuse_request_send "$TRACE/trace" || true)
  reads=$(grep -c "(FUSE_READ)" "$TRACE/trace" || true)
  echo "FUSE requests during one warm read of the Nimbus file: $total (READ: $reads)"
else
  echo "FUSE request count: tracepoint fuse:fuse_request_send not available" >&2
fi
