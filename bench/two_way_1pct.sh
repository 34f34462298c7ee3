#!/bin/bash
# The two-way pass with 1% changed on both sides at W4 (1M files), by hand: two builds
# alternating on one W4 under /dev/shm (not part of CI).
#
#   bash bench/two_way_1pct.sh BASE_BIN_DIR [NEW_BIN_DIR]
#
# For each build, twice: a fresh B and data home, a first sync, a pass with nothing to
# do, bench.mutate of A and of B, then the pass timed (wall seconds, peak RSS).
set -e
here=$(cd "$(dirname "$0")" && pwd)
base=${1:?usage: two_way_1pct.sh BASE_BIN_DIR [NEW_BIN_DIR]}
new=${2:-$here/../target/release}
w=/dev/shm
rm -rf $w/W4 $w/B4 $w/h4
(cd "$here" && python3 -c "import bench; bench.gen_tree('$w/W4',1_000_000,20_000,1024,seed=4,links=False)")
i=0
for bin in "$base" "$new" "$base" "$new"; do
  i=$((i+1))
  rm -rf $w/B4 $w/h4 $w/W4/__versions__; mkdir -p $w/B4 $w/h4
  export TWOWAY_HOME=$w/h4
  "$bin/twoway" $w/W4 $w/B4 --once -q --max-delete 100
  "$bin/twoway" $w/W4 $w/B4 --once -q --max-delete 100
  (cd "$here" && python3 -c "
import bench
bench.mutate('$w/W4', seed=70+$i)
bench.mutate('$w/B4', seed=80+$i)")
  /usr/bin/time -f "$bin: %e s %M KB" "$bin/twoway" $w/W4 $w/B4 --once -q --max-delete 100 2>&1 | tail -1
done
rm -rf $w/W4 $w/B4 $w/h4
