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
# Then, at the last fleet size, the cost of a live-set change: one
# simulated instance leaves (or comes back), and the first call of each of
# BENCH_CHANGE_KEYS existing counters meets DKSTALE and resends with the
# whole live set (4 bytes per instance number); timed per call against the
# same calls once more (steady), inside one SQL function.
# Writes bench/results/<stamp>-fleet.md.
#
# As root: takes the machine lock (/tmp/distkit-test.lock), runs
# test/setup.sh, re-runs itself as the user "distkit" in a copy of the tree
# (bench/lib.sh).  Settings: BENCH_SECONDS (default 8), BENCH_REPS (3),
# BENCH_FLEETS ("2 100 1000"), BENCH_CHANGE_KEYS (10000).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DISTKIT_USER=${DISTKIT_USER:-distkit}
. "$here/bench/lib.sh"
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BENCH_SECONDS=${BENCH_SECONDS:-8}
BENCH_REPS=${BENCH_REPS:-3}
BENCH_FLEETS=${BENCH_FLEETS:-2 100 1000}
BENCH_CHANGE_KEYS=${BENCH_CHANGE_KEYS:-10000}
export BENCH_SECONDS BENCH_REPS BENCH_FLEETS BENCH_CHANGE_KEYS

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

# a live-set change at the last fleet size ($n live): per-call time of the
# first call of each counter after it (DKSTALE, resend with the live set)
# against the next call (steady)
q "CREATE FUNCTION bench_calls(k int) RETURNS double precision LANGUAGE plpgsql AS \$\$
DECLARE s timestamptz := clock_timestamp();
BEGIN
	PERFORM count(distkit_instance_inc('bench.chg.' || g, 1)) FROM generate_series(1, k) g;
	RETURN extract(epoch FROM clock_timestamp() - s) * 1e6 / k;
END \$\$" >/dev/null
q "SELECT bench_calls($BENCH_CHANGE_KEYS)" >/dev/null	# the counters exist
toggle=00000000-0000-4000-8000-000000000001
change=() steady=()
for rep in $(seq 1 "$BENCH_REPS"); do
	if [ $((rep % 2)) = 1 ]; then op=leave; else op=beat; fi
	[ "$n" -gt 1 ] || break
	echo "$toggle" | "$here/test/fake-instance.sh" "$prefix" "$op" 3600000 >/dev/null
	sleep 1	# this server's worker refreshes its copy of the live set
	c=$("${pin[@]}" psql -X -A -t -q -c "SELECT round(bench_calls($BENCH_CHANGE_KEYS)::numeric, 1)")
	st=$("${pin[@]}" psql -X -A -t -q -c "SELECT round(bench_calls($BENCH_CHANGE_KEYS)::numeric, 1)")
	change+=("$c") steady+=("$st")
	log "rep $rep, $n live, one instance ${op}s: first call after the change $c us, steady $st us"
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
	if [ ${#change[@]} -gt 0 ]; then
		c=$(printf '%s\n' "${change[@]}" | median)
		st=$(printf '%s\n' "${steady[@]}" | median)
		echo "A live-set change at $n live instances (one simulated instance leaves or comes back; $BENCH_CHANGE_KEYS existing counters, strict \`distkit_instance_inc\`, one backend, pinned): first call of each counter after the change **$c us**, the next call $st us (median of ${#change[@]}): the first call costs $(awk -v a="$c" -v b="$st" 'BEGIN { printf "%.2f", a / b }')x a steady one, paid once per counter and change."
		echo
	fi
	echo "Runs (tps): $(for k in "${!runs[@]}"; do echo -n "$k:${runs[$k]}; "; done)"
	echo "Load before/after: $load_before / $load_after; steal ${steal}%; $(nproc) CPUs."
} >"$report"
cat "$report"
