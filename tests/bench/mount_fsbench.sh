#!/usr/bin/env bash
# Runs ../shared/bench/fsbench.sh (or $FSBENCH) against a fresh Nimbus mount:
# a real `nimbus serve` on loopback, one logged-in device, cold steps
# remount with an empty client cache. Prints fsbench's "metric value unit"
# lines, plus how long the upload queue took to drain after each write phase
# (FLUSH_CMD = `nimbus sync --wait`). The setup lives in nimbus_env.sh,
# shared with compare.sh (which also runs native disk and rclone).
#
# Usage: tests/bench/mount_fsbench.sh [SCALE]     (SCALE as fsbench.sh; default 1)
# Env:   NIMBUS_BIN (default target/release/nimbus, built if missing)
#        FSBENCH    (default ../shared/bench/fsbench.sh next to the repo)
#        KEEP=1     keep the temp dir for inspection
set -euo pipefail
SCALE=${1:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FSBENCH=${FSBENCH:-$ROOT/../shared/bench/fsbench.sh}
# shellcheck source=tests/bench/nimbus_env.sh
. "$ROOT/tests/bench/nimbus_env.sh"
nb_resolve_bin "$ROOT"
[ -f "$FSBENCH" ] || { echo "fsbench.sh not found at $FSBENCH (set FSBENCH)" >&2; exit 2; }

T=$(mktemp -d /tmp/nimbus-bench.XXXXXX)
cleanup() {
  nb_stop
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nb_start "$T/nimbus"
PRE_COLD_CMD="bash $(nb_cold_script)" FLUSH_CMD=$(nb_flush_cmd) \
  bash "$FSBENCH" "$NB_MNT" "$SCALE"
