# Sourced by the bench scripts (mount_fsbench.sh, compare.sh): a real
# `nimbus serve` on loopback, one logged-in device and its mount, all under
# one directory, plus the cold step fsbench wants (wait for uploads,
# unmount, wipe the client's chunk cache, remount).
#
#   nb_resolve_bin ROOT      sets NB_BIN from NIMBUS_BIN (default
#                            $CARGO_TARGET_DIR or ROOT/target, release; built if missing)
#   nb_start DIR             fresh server + login + mount under DIR (must not
#                            exist yet); sets NB_DIR NB_MNT NB_CACHE NB_PORT NB_URL
#   nb_cold_script           writes DIR/cold.sh (fsbench's PRE_COLD_CMD) and prints its path
#   nb_flush_cmd             prints fsbench's FLUSH_CMD (`nimbus sync --wait`)
#   nb_mount_pid             prints the pid of the process serving the mount
#   nb_stop                  unmounts and stops the server (idempotent; safe from traps)
#
# The mount first runs in the background of the caller; after a cold step
# it is a `--daemon`. Either way nb_stop finds it by its mount point, which
# is unique to DIR, and never leaves the folder mounted.

NB_BIN= NB_DIR= NB_MNT= NB_CACHE= NB_PORT= NB_URL= NB_SERVER_PID=

wait_until() { # SECONDS CMD...
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out: $*" >&2; return 1; }
    sleep 0.05
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

nb_resolve_bin() { # ROOT
  NB_BIN=${NIMBUS_BIN:-${CARGO_TARGET_DIR:-$1/target}/release/nimbus}
  if [ ! -x "$NB_BIN" ]; then
    [ -z "${NIMBUS_BIN:-}" ] || { echo "NIMBUS_BIN=$NIMBUS_BIN is not executable" >&2; return 2; }
    (cd "$1" && cargo build --release --quiet) || return 1
  fi
}

nb_start() { # DIR
  NB_DIR=$1 NB_MNT=$1/mnt NB_CACHE=$1/cache
  mkdir -p "$NB_MNT"
  export NIMBUS_CONFIG_DIR=$NB_DIR/config
  NB_PORT=$(free_port)
  NB_URL=http://127.0.0.1:$NB_PORT
  "$NB_BIN" serve --listen "127.0.0.1:$NB_PORT" --data "$NB_DIR/server" \
    </dev/null >>"$NB_DIR/server.log" 2>&1 &
  NB_SERVER_PID=$!
  wait_until 30 curl -fsS "$NB_URL/healthz" || return 1
  echo bench-password | "$NB_BIN" admin user add bench --password-stdin --data "$NB_DIR/server" >/dev/null 2>&1 || return 1
  echo bench-password | "$NB_BIN" login "$NB_URL" --user bench --password-stdin --device bench >/dev/null || return 1
  "$NB_BIN" mount "$NB_MNT" --cache-dir "$NB_CACHE" </dev/null >>"$NB_DIR/mount.log" 2>&1 &
  wait_until 30 mountpoint -q "$NB_MNT"
}

# The pid serving NB_MNT: from the status attribute, else by command line
# (mounts older than the status `pid` field).
nb_mount_pid() {
  local pid
  pid=$("$NB_BIN" status "$NB_MNT" --json 2>/dev/null |
    python3 -c 'import json,sys; p=json.load(sys.stdin).get("pid"); print(p or "")' 2>/dev/null)
  [ -n "$pid" ] || pid=$(pgrep -f -- "mount $NB_MNT --cache-dir" | head -1)
  echo "$pid"
}

nb_flush_cmd() { echo "$NB_BIN sync --wait $NB_MNT --timeout 600s"; }

# Waits for uploads, unmounts, drops the client's chunk cache (keeping the
# device's metadata so listings stay local) and remounts as a daemon.
nb_cold_script() {
  cat >"$NB_DIR/cold.sh" <<COLD
set -e
export NIMBUS_CONFIG_DIR=$NIMBUS_CONFIG_DIR
"$NB_BIN" sync --wait "$NB_MNT" --timeout 600s
"$NB_BIN" unmount "$NB_MNT"
while mountpoint -q "$NB_MNT"; do sleep 0.05; done
while pgrep -f -- "mount $NB_MNT --cache-dir" >/dev/null; do sleep 0.05; done
rm -rf "$NB_CACHE/chunks"
"$NB_BIN" mount "$NB_MNT" --cache-dir "$NB_CACHE" --daemon </dev/null >>"$NB_DIR/mount.log" 2>&1
COLD
  echo "$NB_DIR/cold.sh"
}

nb_stop() {
  [ -n "$NB_DIR" ] || return 0
  local pids i
  pids=$(pgrep -f -- "mount $NB_MNT --cache-dir" || true)
  if mountpoint -q "$NB_MNT" 2>/dev/null; then
    timeout 120 "$NB_BIN" unmount "$NB_MNT" >/dev/null 2>&1 ||
      fusermount3 -uz "$NB_MNT" 2>/dev/null || umount -l "$NB_MNT" 2>/dev/null || true
  fi
  for i in $(seq 200); do # up to 10 s for the mount process to finish
    pids=$(pgrep -f -- "mount $NB_MNT --cache-dir" || true)
    [ -n "$pids" ] || break
    sleep 0.05
  done
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  if mountpoint -q "$NB_MNT" 2>/dev/null; then umount -l "$NB_MNT" 2>/dev/null || true; fi
  if [ -n "$NB_SERVER_PID" ]; then
    kill "$NB_SERVER_PID" 2>/dev/null || true
    wait "$NB_SERVER_PID" 2>/dev/null || true
  fi
  NB_SERVER_PID= NB_DIR=
}
