#!/bin/bash
# distkit: strict distkit_instance_inc in fleets of 2, 100 and 1,000 live
# instances, against strict distkit_inc, in one run (issue 15).  Starts one
# redis-server (test/redis-ctl.sh, appendonly no) and one PostgreSQL with
# distkit preloaded (test/pg-ctl.sh, distkit.dead_instance_threshold = 1h
# so the simulated instances stay live), registers N-1 simulated instances
# with test/fake-instance.sh (exactly as a server's worker registers), and
# per repetition and fleet size runs pgbench (1 client, pinned: PostgreSQL
# and pgbench on CPU 0, redis-server on the last CPU) on the two workloads
# bench/workloads/instance_inc_strict.sql and strict_inc.sql.  Reports
# median tps, instance_inc / inc per size, and instance_inc at N / at 2.
# Writes bench/results/<stamp>-fleet.md.
#
# As root: takes the machine lock (/tmp/distkit-test.lock), runs
# test/setup.sh, re-runs itself as the user "distkit" in a copy of the tree
# (bench/lib.sh).  Settings: BENCH_SECONDS (default 8), BENCH_REPS (3),
# BENCH_FLEETS ("2 100 1000").
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DISTKIT_USER=${DISTKIT_USER:-distkit}
. "$here/bench/lib.sh"
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BENCH_SECONDS=${BENCH_SECONDS:-8}
BENCH_REPS=${BENCH_REPS:-3}
BENCH_FLEETS=${BENCH_FLEETS:-2 100 1000}
export BENCH_SECONDS BENCH_REPS BENCH_FLEETS

if [ "$(id -u)" = 0 ]; then
	bench_lock fleet
	"$here/test/setup.sh"
	bench_run_as_user fleet distkit-fleet-src fleet.sh
fi

bench_user_lock
export PATH="$("$PG_CONFIG" --bindir):$PATH"
out=${BENCH_RESULTS:-$here/bench/results}
mkdir -p "$out"
base=$(mktemp -d /tmp/distkit-fleet-XXXXXX)
export DISTKIT_REDIS_DIR="$base/redis" DISTKIT_REDIS_CTL="$here/test/redis-ctl.sh"
stop_all() {
	"$here/test/pg-ctl.sh" stop "$base/pg" >/dev/null 2>&1 || true
	[ ! -f "$DISTKIT_REDIS_DIR/ports" ] || "$DISTKIT_REDIS_CTL" stop >/dev/null 2>&1 || true
	rm -rf "$base"
}
trap stop_all EXIT
log() { echo "fleet: $*"; }
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 -c "$1"; }
bench_facts_begin

DISTKIT_REDIS_MODE=single "$DISTKIT_REDIS_CTL" init "$DISTKIT_REDIS_DIR" >/dev/null 9>&-
"$DISTKIT_REDIS_CTL" cli CONFIG SET appendonly no >/dev/null
"$here/test/pg-ctl.sh" start "$base/pg" "$("$DISTKIT_REDIS_CTL" url)" \
	"distkit.dead_instance_threshold = '1h'" "distkit.heartbeat_interval = '200ms'" 9>&-
. "$base/pg/env"
q 'CREATE EXTENSION IF NOT EXISTS distkit' >/dev/null
prefix=$(q 'SHOW distkit.prefix')
ncpu=$(nproc)
if [ "$ncpu" -ge 2 ]; then
	for p in $("$DISTKIT_REDIS_CTL" pidfiles); do taskset -a -p -c $((ncpu - 1)) "$(cat "$p")" >/dev/null; done
	pgpid=$(head -1 "$base/pg/data/postmaster.pid")
	for p in $pgpid $(pgrep -P "$pgpid"); do taskset -a -p -c 0 "$p" >/dev/null 2>&1 || true; done
	pin=(taskset -c 0)
else
	pin=()
fi
wdir="$here/bench/workloads"
q "SELECT distkit_instance_inc('bench.probe', 0, 'strict')" >/dev/null
q "SELECT distkit_inc('bench.probe', 0, 'strict')" >/dev/null

declare -A runs
registered=1	# this server
for rep in $(seq 1 "$BENCH_REPS"); do
	for n in $BENCH_FLEETS; do
		# fleet of n live instances: this server + n-1 simulated ones, the
		# others taken out of the live set (leave), as a shrinking fleet does
		seq 1 $((n - 1)) | awk '{ printf "00000000-0000-4000-8000-%012d\n", $1 }' >"$base/live"
		seq "$n" $((registered - 1)) | awk '{ printf "00000000-0000-4000-8000-%012d\n", $1 }' >"$base/gone"
		[ ! -s "$base/gone" ] || "$here/test/fake-instance.sh" "$prefix" leave 3600000 <"$base/gone" >/dev/null
		[ ! -s "$base/live" ] || "$here/test/fake-instance.sh" "$prefix" beat 3600000 <"$base/live" >/dev/null
		registered=$(( n > registered ? n : registered ))
		sleep 1	# this server's worker refreshes its copy of the live set
		live=$(q 'SELECT count(*) FILTER (WHERE alive) FROM distkit_instances')
		[ "$live" = "$n" ] || { echo "fleet: $live live instances, wanted $n" >&2; exit 1; }
		for w in instance_inc_strict strict_inc; do
			tps=$("${pin[@]}" pgbench -n -M prepared -c 1 -T "$BENCH_SECONDS" -f "$wdir/$w.sql" 2>&1 |
				sed -n 's/^tps = \([0-9.]*\).*/\1/p')
			runs[$w.$n]="${runs[$w.$n]:-} $tps"
			log "rep $rep, $n live: $w $tps tps"
		done
	done
done
bench_facts_end

report="$out/$stamp-fleet.md"
{
	echo "# distkit fleet benchmark ($started)"
	echo
	echo "Command: \`bench/fleet.sh\` (BENCH_SECONDS=$BENCH_SECONDS BENCH_REPS=$BENCH_REPS BENCH_FLEETS='$BENCH_FLEETS'), 1 client, pinned; median tps of $BENCH_REPS runs."
	echo
	echo "| live instances | strict distkit_instance_inc tps | strict distkit_inc tps | instance_inc / inc | instance_inc / instance_inc at 2 |"
	echo "|---|---|---|---|---|"
	first=""
	for n in $BENCH_FLEETS; do
		i=$(tr ' ' '\n' <<<"${runs[instance_inc_strict.$n]}" | grep . | median)
		c=$(tr ' ' '\n' <<<"${runs[strict_inc.$n]}" | grep . | median)
		[ -n "$first" ] || first=$i
		echo "| $n | $i | $c | $(awk -v a="$i" -v b="$c" 'BEGIN { printf "%.2f", a / b }') | $(awk -v a="$i" -v b="$first" 'BEGIN { printf "%.2f", a / b }') |"
	done
	echo
	echo "Runs (tps): $(for k in "${!runs[@]}"; do echo -n "$k:${runs[$k]}; "; done)"
	echo "Load before/after: $load_before / $load_after; steal ${steal}%; $(nproc) CPUs."
} >"$report"
cat "$report"
