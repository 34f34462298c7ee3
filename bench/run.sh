#!/usr/bin/env bash
# Builds release binaries, installs the peer tools when missing (skipping any it cannot
# get), and runs the benchmark. Arguments go to bench.py (--quick, --runs N, --cases …,
# --bench-dir DIR; BENCH_DIR works too). Default directory: /dev/shm (tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bins
missing=()
for t in rsync unison rclone; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
[ -x /usr/bin/time ] || missing+=(time)   # GNU time measures peak RSS
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null 2>&1 || true
  for t in "${missing[@]}"; do
    apt-get install -y -qq "$t" >/dev/null 2>&1 || echo "bench: cannot install $t; skipping it" >&2
  done
fi
exec python3 bench/bench.py "$@"
