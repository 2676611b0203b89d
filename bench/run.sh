#!/bin/bash
# distkit benchmark harness (issue 7): one command that starts its own
# redis-server, memcached and PostgreSQL (distkit and pgmemcache preloaded)
# on loopback, runs every workload of bench/workloads.list with pgbench,
# adds a redis-benchmark baseline (EVALSHA of lua/counter_inc.lua), measures
# the lax flusher (increments per Redis command, worker CPU, flush lag with
# bench/lag-probe.pl) and the lax buffer's shared memory, and writes a
# Markdown report (plus raw figures and, with gnuplot, a PNG chart) to
# bench/results/.
#
# As root (a fresh Debian bookworm machine): takes the machine lock, sets up
# (test/setup.sh: apt, user "distkit", build, install; gnuplot-nox for the
# chart; postgresql-15-pgmemcache and memcached for the peer), then re-runs
# itself as that user in a copy of the tree and copies the results back.
# As any other user: expects distkit installed.
#
# Settings (environment):
#   BENCH_SECONDS   length of one pgbench / redis-benchmark run (default 10)
#   BENCH_REPS      repetitions; runs are interleaved (default 3)
#   BENCH_CLIENTS   client counts (default "1 8")
#   BENCH_WARMUP    seconds of warm-up per workload, 1 client (default 2)
#   BENCH_WORKLOADS names to run (default: all of bench/workloads.list)
#   BENCH_QUICK=1   smoke test: 2 s runs, 1 repetition, 1 s warm-up, 1 s strace
#   BENCH_REDIS_APPENDONLY  Redis AOF for the run: no (default, Redis's own
#                   default) or yes (appendfsync always, as the test suite)
#   BENCH_REDIS_MODE  single (default) or cluster: a 3-master Redis Cluster
#                   (test/redis-ctl.sh), distkit.redis_url = redis-cluster://...
#   BENCH_PIN       CPU placement: 1client (default: pin 1-client runs, Redis
#                   on its own CPU), all, none; see place() below
#   BENCH_RESULTS   where the report goes (default bench/results)
#   BENCH_KEEP_LOGS=1  keep pgbench per-transaction logs (large)
#   BENCH_LAG       seconds of each flush-lag probe (default BENCH_SECONDS;
#                   0: no lag probes)
#   BENCH_PG_CONF   extra postgresql.conf lines, separated by ";", e.g.
#                   "distkit.lax_capacity = 131072"
#   BENCH_HOTPATH   seconds of strace on one backend per lax workload and
#                   client count, after sampling wait events (default 3;
#                   0: skip; needs strace)
# A run never fails on speed; it exits non-zero only when a workload fails
# (an error other than "function not available") or the set-up fails.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DISTKIT_USER=${DISTKIT_USER:-distkit}
. "$here/bench/lib.sh"
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

if [ -n "${BENCH_QUICK:-}" ]; then
	: "${BENCH_SECONDS:=2}" "${BENCH_REPS:=1}" "${BENCH_WARMUP:=1}" "${BENCH_HOTPATH:=1}"
fi
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_REPS=${BENCH_REPS:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-1 8}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_WORKLOADS=${BENCH_WORKLOADS:-}
BENCH_REDIS_APPENDONLY=${BENCH_REDIS_APPENDONLY:-no}
BENCH_LAG=${BENCH_LAG:-$BENCH_SECONDS}
BENCH_PG_CONF=${BENCH_PG_CONF:-}
BENCH_HOTPATH=${BENCH_HOTPATH:-3}
BENCH_REDIS_MODE=${BENCH_REDIS_MODE:-single}
case $BENCH_REDIS_MODE in single | cluster) ;; *) echo "bench: BENCH_REDIS_MODE must be single or cluster" >&2; exit 2 ;; esac
export BENCH_REDIS_MODE BENCH_HOTPATH BENCH_SECONDS BENCH_REPS BENCH_CLIENTS BENCH_WARMUP BENCH_WORKLOADS BENCH_REDIS_APPENDONLY BENCH_LAG BENCH_PG_CONF
export BENCH_QUICK=${BENCH_QUICK:-} BENCH_KEEP_LOGS=${BENCH_KEEP_LOGS:-} BENCH_PIN=${BENCH_PIN:-1client}

# The command as a reader can repeat it (effective settings spelled out).
if [ -z "${BENCH_COMMAND:-}" ]; then
	BENCH_COMMAND="BENCH_SECONDS=$BENCH_SECONDS BENCH_REPS=$BENCH_REPS BENCH_CLIENTS='$BENCH_CLIENTS' BENCH_WARMUP=$BENCH_WARMUP"
	[ -z "$BENCH_WORKLOADS" ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_WORKLOADS='$BENCH_WORKLOADS'"
	[ "$BENCH_REDIS_APPENDONLY" = no ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_REDIS_APPENDONLY=$BENCH_REDIS_APPENDONLY"
	[ "$BENCH_PIN" = 1client ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_PIN=$BENCH_PIN"
	[ "$BENCH_LAG" = "$BENCH_SECONDS" ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_LAG=$BENCH_LAG"
	[ -z "$BENCH_PG_CONF" ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_PG_CONF='$BENCH_PG_CONF'"
	[ "$BENCH_HOTPATH" = 3 ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_HOTPATH=$BENCH_HOTPATH"
	[ "$BENCH_REDIS_MODE" = single ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_REDIS_MODE=$BENCH_REDIS_MODE"
	BENCH_COMMAND="$BENCH_COMMAND bench/run.sh"
	if git -C "$here" rev-parse --short HEAD >/dev/null 2>&1; then
		BENCH_GIT="$(git -C "$here" rev-parse --short HEAD)$(git -C "$here" diff --quiet HEAD -- . 2>/dev/null || echo ' (with uncommitted changes)')"
	fi
fi
export BENCH_COMMAND BENCH_GIT=${BENCH_GIT:-unknown}

if [ "$(id -u)" = 0 ]; then
	bench_lock bench
	"$here/test/setup.sh"
	# optional packages: the chart (gnuplot) and the peer (pgmemcache +
	# memcached); a run without them reports what is missing
	apt_ensure() {
		local why=$1 missing="" p
		shift
		for p in "$@"; do
			dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
		done
		[ -n "$missing" ] || return 0
		echo "bench: installing$missing ($why)"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 ||
			{ apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; } ||
			echo "bench: could not install$missing; $why will be missing from the report" >&2
	}
	command -v gnuplot >/dev/null 2>&1 || apt_ensure "the chart" gnuplot-nox
	[ "$BENCH_HOTPATH" = 0 ] || command -v strace >/dev/null 2>&1 || apt_ensure "the hot-path check" strace
	apt_ensure "the peer, pgmemcache against memcached" postgresql-15-pgmemcache memcached
	bench_run_as_user bench distkit-bench-src run.sh
fi

# ---------------------------------------------------------------- as the user
bench_user_lock
export PATH="$("$PG_CONFIG" --bindir):$PATH"
bdir="$here/bench"
wdir="$bdir/workloads"
out=${BENCH_RESULTS:-$bdir/results}
mkdir -p "$out"
base=/tmp/distkit-bench-$(id -un)
export DISTKIT_REDIS_DIR="$base/redis"
rctl="$here/test/redis-ctl.sh"
logs="$base/logs"

mc_pidfile="$base/memcached/memcached.pid"
stop_memcached() {
	local p
	p=$(cat "$mc_pidfile" 2>/dev/null) || return 0
	kill -TERM "$p" 2>/dev/null || true
	for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
	kill -KILL "$p" 2>/dev/null || true
	rm -f "$mc_pidfile"
}
stop_all() {
	"$here/test/pg-ctl.sh" stop "$base/pg" >/dev/null 2>&1 || true
	"$rctl" stop >/dev/null 2>&1 || true
	stop_memcached
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
stop_all
rm -rf "$base"
mkdir -p "$logs"

for tool in pgbench psql redis-server redis-benchmark redis-cli perl; do
	command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done

log() { echo "bench: $*"; }
q() { psql -X -A -t -q -c "$1"; }
bench_facts_begin

# ---------------------------------------------------------------- servers
# The servers must not inherit the lock's descriptor (fd 9): a server that
# outlived this run would keep every other run waiting.
DISTKIT_REDIS_MODE=$BENCH_REDIS_MODE "$rctl" init "$DISTKIT_REDIS_DIR" >/dev/null 9>&-
rport=$("$rctl" port)
rurl=$("$rctl" url)
if [ "$BENCH_REDIS_APPENDONLY" = no ]; then
	"$rctl" cli CONFIG SET appendonly no >/dev/null
fi

# The peer: memcached on a free loopback port, pgmemcache preloaded with it
# as its default server.  Either missing: the pgmemcache workload is skipped
# and the report says why.
pg_conf=()
mport="" peer_note=""
pkglib=$("$PG_CONFIG" --pkglibdir)
if ! command -v memcached >/dev/null 2>&1; then
	peer_note="memcached is not installed (Debian package memcached)"
elif [ ! -f "$pkglib/pgmemcache.so" ]; then
	peer_note="pgmemcache is not installed (Debian package postgresql-15-pgmemcache)"
else
	mkdir -p "$base/memcached"
	for _ in $(seq 1 50); do
		mport=$((20000 + RANDOM % 30000))
		(exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null || break
	done
	memcached -d -l 127.0.0.1 -p "$mport" -U 0 -m 64 -P "$mc_pidfile" 9>&-
	for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null && break; sleep 0.05; done
	if (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null; then
		pg_conf+=("shared_preload_libraries = 'distkit,pgmemcache'" "pgmemcache.default_servers = '127.0.0.1:$mport'")
	else
		peer_note="memcached did not start on 127.0.0.1:$mport"
		mport=""
	fi
fi
if [ -n "$BENCH_PG_CONF" ]; then
	IFS=';' read -r -a extra <<<"$BENCH_PG_CONF"
	for line in "${extra[@]}"; do [ -z "${line// /}" ] || pg_conf+=("$line"); done
fi
"$here/test/pg-ctl.sh" start "$base/pg" "$rurl" "${pg_conf[@]}" 9>&-
. "$base/pg/env"
psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION IF NOT EXISTS distkit' >/dev/null
log "Redis ($BENCH_REDIS_MODE: $rurl), PostgreSQL on 127.0.0.1:$PGPORT (socket $PGHOST)${mport:+, memcached on 127.0.0.1:$mport}"
[ -z "$peer_note" ] || log "the peer is not measured: $peer_note"

# CPU placement (BENCH_PIN): "1client" (default) pins the 1-client runs:
# redis-server on the last CPU, PostgreSQL (postmaster and its children, so
# every new backend), pgbench and redis-benchmark on CPU 0; runs with more
# clients use every CPU.  "all" pins every run, "none" none.  Unpinned, the
# scheduler places the three parties freely, and on a small VM whether two
# of them share a CPU changed a 1-client round trip 2-3x from run to run;
# pinned, Redis is always one CPU hop away, as from another host.
case $BENCH_PIN in
none | 1client | all) ;;
*) echo "bench: BENCH_PIN must be none, 1client or all" >&2; exit 2 ;;
esac
[ "$BENCH_PIN" = none ] || command -v taskset >/dev/null || { echo "bench: BENCH_PIN=$BENCH_PIN needs taskset (util-linux)" >&2; exit 1; }
ncpu=$(nproc)
pin=()
# place CLIENTS: set the affinities for the next run and the prefix in pin[]
place() {
	local want=no cpus_pg cpus_redis p pgpid
	[ "$BENCH_PIN" = all ] || { [ "$BENCH_PIN" = 1client ] && [ "$1" = 1 ]; } && want=yes
	[ "$BENCH_PIN" != none ] || return 0
	if [ "$want" = yes ] && [ "$ncpu" -ge 2 ]; then
		cpus_pg=0 cpus_redis=$((ncpu - 1)) pin=(taskset -c 0)
	else
		cpus_pg=0-$((ncpu - 1)) cpus_redis=$cpus_pg pin=()
	fi
	for p in $("$rctl" pidfiles); do taskset -a -p -c "$cpus_redis" "$(cat "$p")" >/dev/null; done
	[ ! -s "$mc_pidfile" ] || taskset -a -p -c "$cpus_redis" "$(cat "$mc_pidfile")" >/dev/null
	pgpid=$(head -1 "$base/pg/data/postmaster.pid")
	for p in $pgpid $(pgrep -P "$pgpid"); do taskset -a -p -c "$cpus_pg" "$p" >/dev/null 2>&1 || true; done
}

# ---------------------------------------------------------------- workloads
all=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$bdir/workloads.list" | grep -v '^$')
if [ -n "$BENCH_WORKLOADS" ]; then
	for w in $BENCH_WORKLOADS; do
		grep -qx "$w" <<<"$all" || { echo "bench: unknown workload $w (see bench/workloads.list)" >&2; exit 2; }
	done
	all=$(for w in $all; do case " $BENCH_WORKLOADS " in *" $w "*) echo "$w" ;; esac; done)
fi

# run one SQL statement; on error print "SQLSTATE: message" and fail
sql_probe() {
	local o
	if o=$(printf '\\set VERBOSITY verbose\n%s;\n' "$1" | psql -X -q -v ON_ERROR_STOP=1 2>&1 >/dev/null); then return 0; fi
	o=$(sed -n 's/^.*ERROR: *\([0-9A-Z]\{5\}\): \(.*\)$/\1: \2/p' <<<"$o" | head -1)
	echo "${o:-unknown error}"
	return 1
}

declare -A status title pgopt flushfig ratefig setup_ms
active=()
for w in $all; do
	[ -f "$wdir/$w.sql" ] || { echo "bench: $wdir/$w.sql missing" >&2; exit 2; }
	title[$w]=$(directive "$w" title)
	[ -n "${title[$w]}" ] || title[$w]=$w
	pgopt[$w]=$(directive "$w" pgoptions)
	flushfig[$w]=$(directive "$w" flush-figures)
	ratefig[$w]=$(directive "$w" rate-figures)
	st=ok
	while IFS= read -r probe; do
		[ -n "$probe" ] || continue
		if ! err=$(sql_probe "$probe"); then
			case $err in
			42883:* | 42704:* | 0A000:*) st="skipped: not available ($err)" ;;
			58P01:*) st="skipped: extension not installed ($err)" ;;
			*) st="failed: requirement check failed ($err)" ;;
			esac
			break
		fi
	done < <(directive "$w" requires)
	if [ "$st" = ok ]; then
		while IFS= read -r stmt; do
			[ -n "$stmt" ] || continue
			t0=$(date +%s%N)
			if ! err=$(PGOPTIONS=${pgopt[$w]} sql_probe "$stmt"); then st="failed: setup failed ($err)"; break; fi
			setup_ms[$w]="${setup_ms[$w]:+${setup_ms[$w]} + }$(( ($(date +%s%N) - t0) / 1000000 ))"
		done < <(directive "$w" setup)
	fi
	[ "$st" != ok ] || place 1
	if [ "$st" = ok ] && ! PGOPTIONS=${pgopt[$w]} "${pin[@]}" pgbench -n -M prepared -T "$BENCH_WARMUP" -c 1 -j 1 -f "$wdir/$w.sql" >"$logs/$w.warmup.out" 2>&1; then
		st="failed: warm-up run failed: $(grep -m1 -E 'error|ERROR|aborted' "$logs/$w.warmup.out" || tail -1 "$logs/$w.warmup.out")"
	fi
	status[$w]=$st
	log "$w: $st${setup_ms[$w]:+ (setup: ${setup_ms[$w]} ms)}"
	[ "$st" != ok ] || active+=("$w")
done

# ---------------------------------------------------------------- redis baseline
script="$here/lua/counter_inc.lua"
rkey='distkit:c:{bench:redis-benchmark}'
# Did distkit load this very file?  (It loads its embedded copy on NOSCRIPT.)
sha_expected=$(sha1sum "$script" | cut -d' ' -f1)
same_script=unknown
if [ -n "${status[strict_inc]:-}" ] && [ "${status[strict_inc]}" = ok ]; then
	[ "$("$rctl" cli SCRIPT EXISTS "$sha_expected")" = 1 ] && same_script=yes || same_script=no
fi
sha=$("$rctl" cli -x SCRIPT LOAD <"$script")
# the port of the Redis holding KEY: in a cluster the master of its slot
key_port() {
	local slot p
	if [ "$BENCH_REDIS_MODE" != cluster ]; then "$rctl" port; return; fi
	slot=$("$rctl" cli CLUSTER KEYSLOT "$1")
	for p in $("$rctl" masters | tr , ' '); do
		if "$rctl" node-cli "$p" CLUSTER NODES | awk -v s="$slot" '/myself/ { for (i = 9; i <= NF; i++) { n = split($i, r, "-"); hi = n > 1 ? r[2] : r[1]; if (s + 0 >= r[1] + 0 && s + 0 <= hi + 0) found = 1 } } END { exit !found }'; then
			echo "$p"
			return
		fi
	done
	"$rctl" port
}
# in a cluster, redis-benchmark talks to the master of the key's slot
rport=$(key_port "$rkey")
[ "$sha" = "$sha_expected" ] || { echo "bench: SCRIPT LOAD returned $sha, expected $sha_expected" >&2; exit 1; }

# redis-benchmark run: prints "rps avg_ms p50_ms p99_ms requests"
redis_run() {
	local c=$1 n=$2 f="$logs/redis.c$1.out"
	"${pin[@]}" redis-benchmark -h 127.0.0.1 -p "$rport" -c "$c" -n "$n" --csv EVALSHA "$sha" 1 "$rkey" 1 >"$f" 2>&1 || { cat "$f" >&2; return 1; }
	tail -1 "$f" | tr -d '"' | awk -F, -v n="$n" '{print $(NF-6), $(NF-5), $(NF-3), $(NF-1), n}'
}
# enough requests for about BENCH_SECONDS per run (calibrated once)
declare -A rn
for c in $BENCH_CLIENTS; do
	place "$c"
	rps=$(redis_run "$c" 3000 | cut -d' ' -f1)
	rn[$c]=$(awk -v r="$rps" -v s="$BENCH_SECONDS" 'BEGIN { n = int(r * s); print (n < 1000 ? 1000 : n) }')
	log "redis-benchmark -c $c: ${rn[$c]} requests per run (~${BENCH_SECONDS}s)"
done

# ---------------------------------------------------------------- runs
# pgbench run: prints "tps avg_ms p50_ms p99_ms transactions zero_pct".
# avg is pgbench's own "latency average" (clients x duration / transactions,
# exact for a closed loop); p50/p99 come from the per-transaction log.
# pgbench 15 reads the clock lazily: a reply that is already there when a
# client thread gets the CPU back is logged as 0 us, so when threads
# outnumber CPUs the log under-states latencies.  zero_pct (share of 0 us
# entries) says how much; the report marks such percentiles as lower bounds.
pgbench_run() {
	local w=$1 c=$2 prefix="$logs/$1.c$2.r$3" tps avg
	rm -f "$prefix".*
	if ! PGOPTIONS=${pgopt[$w]} "${pin[@]}" pgbench -n -M prepared -T "$BENCH_SECONDS" -c "$c" -j "$c" --log --log-prefix="$prefix" \
		-f "$wdir/$w.sql" >"$prefix.out" 2>&1; then
		cat "$prefix.out" >&2
		return 1
	fi
	tps=$(awk '/^tps = /{print $3; exit}' "$prefix.out")
	avg=$(awk '/^latency average = /{print $4; exit}' "$prefix.out")
	echo "$tps $avg $(cat "$prefix".[0-9]* | awk '{print $3}' | sort -n | awk '
		{ a[NR] = $1; if ($1 == 0) z++ }
		function rank(p,  i) { i = int(p * NR); if (i < p * NR) i++; return a[i < 1 ? 1 : i] }
		END { printf "%.4f %.4f %d %.1f\n", rank(0.5) / 1000, rank(0.99) / 1000, NR, 100 * z / NR }')"
	[ -n "$BENCH_KEEP_LOGS" ] || rm -f "$prefix".[0-9]*
}

# ---------------------------------------------------------------- flusher figures
# For lax workloads ("-- flush-figures: yes") each run is framed by
# snapshots: distkit_flush() first (nothing pending), then the flusher's CPU
# time (/proc/<pid>/schedstat, nanoseconds; /proc/<pid>/stat ticks as a
# fallback), Redis's EVALSHA+EVAL call count (INFO commandstats) and
# distkit_stats; after the run the CPU time at once (CPU during the load),
# then distkit_flush() (the rest of the run's increments reach Redis) and
# the counts again.
flusher_pid() { q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit worker' LIMIT 1"; }
proc_cpu_ns() {
	if [ -r "/proc/$1/schedstat" ]; then
		awk '{print $1}' "/proc/$1/schedstat"
	else
		awk -v t="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1e9 / t}' "/proc/$1/stat"
	fi
}
# Redis calls: "evalsha+eval all" (all: every command but INFO, including
# those that scripts run: a lax_flush.lua EVALSHA counts 1 + 5)
redis_calls() {
	"$rctl" cli INFO commandstats | tr -d '\r' | awk -F'[:=,]' '
		$1 ~ /^cmdstat_/ && $1 != "cmdstat_info" { all += $3 }
		$1 == "cmdstat_evalsha" || $1 == "cmdstat_eval" { ev += $3 }
		END { print ev + 0, all + 0 }'
}
# "flushes keys_flushed strict_fallbacks flush_errors seed_reads" (seed_reads:
# first-touch reads of a key's total, one Redis GET each; 0 on a 0.1.0
# catalogue, which has no such column)
lax_stats() {
	q "SELECT flushes, keys_flushed, strict_fallbacks, flush_errors, coalesce((to_jsonb(s) ->> 'seed_reads')::bigint, 0) FROM distkit_stats() s" | tr '|' ' '
}
redis_cpu_ns() { proc_cpu_ns "$(cat "$("$rctl" pidfile)")" 2>/dev/null || echo 0; }
# snapshot before a lax run:
# "t_ns pid cpu_ns evalsha calls flushes keys fallbacks errors seeds redis_cpu_ns"
flush_snap_before() {
	q "SELECT distkit_flush()" >/dev/null
	local pid
	pid=$(flusher_pid)
	echo "$(date +%s%N) ${pid:-0} $(proc_cpu_ns "${pid:-0}" 2>/dev/null || echo 0) $(redis_calls) $(lax_stats) $(redis_cpu_ns)"
}
# after: time and CPU times at once, then flush, then the counts
flush_snap_after() {
	local pid t cpu rcpu
	t=$(date +%s%N)
	pid=$(flusher_pid)
	cpu=$(proc_cpu_ns "${pid:-0}" 2>/dev/null || echo 0)
	rcpu=$(redis_cpu_ns)
	q "SELECT distkit_flush()" >/dev/null
	echo "$t ${pid:-0} $cpu $(redis_calls) $(lax_stats) $rcpu"
}
flushraw="$out/$stamp.flush.tsv"
printf 'rep\tworkload\tclients\tincrements\tseconds\tevalsha\tredis_calls\tflushes\tkeys_flushed\tstrict_fallbacks\tflush_errors\tflusher_cpu_ms\tsame_flusher\tredis_cpu_ms\tseed_reads\n' >"$flushraw"
flush_record() {	# rep workload clients increments "before" "after"
	local b a
	read -r -a b <<<"$5"
	read -r -a a <<<"$6"
	awk -v rep="$1" -v w="$2" -v c="$3" -v n="$4" \
		-v t0="${b[0]}" -v p0="${b[1]}" -v c0="${b[2]}" -v e0="${b[3]}" -v r0="${b[4]}" -v f0="${b[5]}" -v k0="${b[6]}" -v s0="${b[7]}" -v x0="${b[8]}" -v d0="${b[9]}" -v r0c="${b[10]}" \
		-v t1="${a[0]}" -v p1="${a[1]}" -v c1="${a[2]}" -v e1="${a[3]}" -v r1="${a[4]}" -v f1="${a[5]}" -v k1="${a[6]}" -v s1="${a[7]}" -v x1="${a[8]}" -v d1="${a[9]}" -v r1c="${a[10]}" \
		'BEGIN { printf "%s\t%s\t%s\t%s\t%.3f\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t%s\t%.3f\t%d\n", rep, w, c, n, (t1 - t0) / 1e9,
			e1 - e0, r1 - r0, f1 - f0, k1 - k0, s1 - s0, x1 - x0, (c1 - c0) / 1e6, (p0 == p1 && p0 != 0) ? "yes" : "no", (r1c - r0c) / 1e6, d1 - d0 }' >>"$flushraw"
}

# For lax rate limiting workloads ("-- rate-figures: yes"): the
# reservations (Redis calls) and decisions of distkit_rate_stats around each
# run.  "refills decisions"
rate_snap() { q "SELECT coalesce(sum(refills), 0) || ' ' || coalesce(sum(allowed + denied), 0) || ' ' || coalesce(sum(allowed), 0) FROM distkit_rate_stats" | tr -d '\n'; }
rateraw="$out/$stamp.rate.tsv"
printf 'rep\tworkload\tclients\treservations\tdecisions\tallowed\n' >"$rateraw"

nclients=$(wc -w <<<"$BENCH_CLIENTS")
nlax=0
for w in "${active[@]}"; do [ "${flushfig[$w]}" != yes ] || nlax=$((nlax + 1)); done
total=$(( BENCH_REPS * (${#active[@]} + 1) * nclients * BENCH_SECONDS + (nlax * nclients + 1) * (BENCH_LAG > 0 ? BENCH_LAG + 3 : 0) + BENCH_SECONDS ))
log "${#active[@]} workloads + redis baseline, clients: $BENCH_CLIENTS, $BENCH_REPS x ${BENCH_SECONDS}s each, then flush-lag probes and the idle flusher: about $((total / 60)) min $((total % 60)) s"
raw="$out/$stamp.tsv"
printf 'rep\tworkload\tclients\ttps\tavg_ms\tp50_ms\tp99_ms\ttransactions\tzero_latency_pct\n' >"$raw"
failed=0
for rep in $(seq 1 "$BENCH_REPS"); do
	for w in "${active[@]}" redis_evalsha; do
		for c in $BENCH_CLIENTS; do
			[ "${status[$w]:-ok}" = ok ] || continue
			place "$c"
			snap0=""
			if [ "$w" = redis_evalsha ]; then
				r=$(redis_run "$c" "${rn[$c]}") || r=""
			else
				[ "${flushfig[$w]}" != yes ] || snap0=$(flush_snap_before)
				rsnap0=""
				[ "${ratefig[$w]}" != yes ] || rsnap0=$(rate_snap)
				r=$(pgbench_run "$w" "$c" "$rep") || r=""
				if [ -n "$rsnap0" ]; then
					read -r rr0 rd0 ra0 <<<"$rsnap0"
					read -r rr1 rd1 ra1 <<<"$(rate_snap)"
					printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$w" "$c" "$((rr1 - rr0))" "$((rd1 - rd0))" "$((ra1 - ra0))" >>"$rateraw"
				fi
			fi
			if [ -z "$r" ]; then
				status[$w]="failed: run $rep with $c clients failed (see $logs)"
				log "$w: ${status[$w]}"
				failed=1
				continue
			fi
			read -r tps avg p50 p99 n zp <<<"$r"
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$w" "$c" "$tps" "$avg" "$p50" "$p99" "$n" "${zp:-0}" >>"$raw"
			[ -z "$snap0" ] || flush_record "$rep" "$w" "$c" "$n" "$snap0" "$(flush_snap_after)"
			printf 'bench: rep %s %-14s c=%-2s %10.0f tps  avg %.3f ms  p99 %.3f ms\n' "$rep" "$w" "$c" "$tps" "$avg" "$p99"
		done
	done
done

# ---------------------------------------------------------------- flush lag
# bench/lag-probe.pl increments a probe key in lax mode (one call every
# 0-25 ms, random) and polls Redis GET until the value shows there: once
# while nothing else runs ("idle", 1-client placement), and once while each
# lax workload runs with each client count.
lagraw="$out/$stamp.lag.tsv"
printf 'load\tclients\tcall_ms\tlag_ms\n' >"$lagraw"
prefix=$(q "SHOW distkit.prefix")
lag_key=bench.lagprobe
lag_rkey="$prefix:c:{$lag_key}"
# lag_run WORKLOAD CLIENTS ("idle" 1: the probe alone)
lag_run() {
	local w=$1 c=$2 f="$logs/lag.$1.c$2" bp=""
	place "$c"
	if [ "$w" != idle ]; then
		PGOPTIONS=${pgopt[$w]} "${pin[@]}" pgbench -n -M prepared -T "$((BENCH_LAG + 2))" -c "$c" -j "$c" \
			-f "$wdir/$w.sql" >"$f.pgbench.out" 2>&1 &
		bp=$!
		sleep 1
	fi
	local fb0 fb1
	fb0=$(q "SELECT strict_fallbacks FROM distkit_stats")
	if PGOPTIONS=${pgopt[$w]:-} "${pin[@]}" perl "$bdir/lag-probe.pl" "$BENCH_LAG" "$(key_port "$lag_rkey")" "$lag_rkey" "$lag_key" >"$f.out" 2>"$f.err"; then
		fb1=$(q "SELECT strict_fallbacks FROM distkit_stats")
		awk -v w="$w" -v c="$c" '{ printf "%s\t%s\t%s\t%s\n", w, c, $1, $2 }' "$f.out" >>"$lagraw"
		printf '%s\t%s\t%s\n' "$w" "$c" "$((fb1 - fb0))" >>"$logs/lag.fallbacks"
	else
		log "lag probe during $w with $c clients failed: $(head -1 "$f.err")"
	fi
	[ -z "$bp" ] || wait "$bp" || log "lag: pgbench $w -c $c failed (see $f.pgbench.out)"
}
idle_cpu_ms="" idle_secs="" idle_calls=""
if [ "$nlax" -gt 0 ]; then
	if [ "$BENCH_LAG" -gt 0 ]; then
		log "flush lag: probe alone (idle), ${BENCH_LAG}s"
		lag_run idle 1
		for w in "${active[@]}"; do
			[ "${flushfig[$w]}" = yes ] || continue
			for c in $BENCH_CLIENTS; do
				log "flush lag: probe during $w, $c client(s), ${BENCH_LAG}s"
				lag_run "$w" "$c"
			done
		done
	fi
	# the flusher with nothing to do: CPU time and Redis commands
	place 1
	q "SELECT distkit_flush()" >/dev/null
	sleep 1
	pid=$(flusher_pid)
	if [ -n "$pid" ]; then
		read -r ev0 calls0 < <(redis_calls)
		cpu0=$(proc_cpu_ns "$pid") t0=$(date +%s%N)
		log "idle flusher: ${BENCH_SECONDS}s"
		sleep "$BENCH_SECONDS"
		cpu1=$(proc_cpu_ns "$pid") t1=$(date +%s%N)
		read -r ev1 calls1 < <(redis_calls)
		if [ "$(flusher_pid)" = "$pid" ]; then
			idle_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
			idle_cpu_ms=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')
			idle_calls="$((ev1 - ev0)) EVALSHA/EVAL, $((calls1 - calls0)) commands in all (commands run inside scripts included, INFO excluded)"
		fi
	fi
fi

# ---------------------------------------------------------------- hot path
# Where do the backends of a lax workload spend their time, and what system
# calls does one of them make per call?  While pgbench runs the workload:
# 1. 200 samples of pg_stat_activity (5 ms apart, one session) of the
#    pgbench backends' wait events ("CPU" when none): LWLock:distkit is a
#    wait for the lax buffer's lock, Extension a wait for Redis;
# 2. strace -f -yy on one of those backends for BENCH_HOTPATH seconds:
#    system calls per transaction (transactions = sendto on its Unix socket
#    to pgbench); futex calls are sleeps on a semaphore (a lock wait).
# strace slows the traced backend down; only counts are taken from it.
hotraw="$out/$stamp.hotpath.tsv"
printf 'workload\tclients\tkind\tname\tcount\n' >"$hotraw"
hotpath_run() {
	local w=$1 c=$2 f="$logs/hot.$1.c$2" bp pid
	place "$c"
	PGOPTIONS=${pgopt[$w]} "${pin[@]}" pgbench -n -M prepared -T "$((BENCH_HOTPATH + 5))" -c "$c" -j "$c" \
		-f "$wdir/$w.sql" >"$f.pgbench.out" 2>&1 &
	bp=$!
	sleep 1
	q "CREATE TEMP TABLE IF NOT EXISTS bench_we (ev text);
	   DO \$\$ BEGIN FOR i IN 1..200 LOOP
	     PERFORM pg_stat_clear_snapshot();
	     INSERT INTO bench_we SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU')
	       FROM pg_stat_activity WHERE application_name = 'pgbench' AND pid <> pg_backend_pid();
	     PERFORM pg_sleep(0.005);
	   END LOOP; END \$\$;
	   SELECT ev, count(*) FROM bench_we GROUP BY 1 ORDER BY 2 DESC" 2>"$f.err" |
		awk -F'|' -v w="$w" -v c="$c" 'NF == 2 { printf "%s\t%s\twait\t%s\t%s\n", w, c, $1, $2 }' >>"$hotraw" || true
	pid=$(q "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' LIMIT 1")
	if [ -n "$pid" ] && command -v strace >/dev/null 2>&1; then
		timeout -s INT "$BENCH_HOTPATH" strace -f -qq -yy -p "$pid" -o "$f.strace" 2>>"$f.err" || true
		awk -v w="$w" -v c="$c" '
			/resumed>/ { next }
			{ name = $2; sub(/\(.*/, "", name); if (name == "") next; n[name]++; total++
			  if (name == "sendto" && $2 ~ /UNIX/) tx++ }
			END { printf "%s\t%s\tstrace\ttransactions\t%d\n", w, c, tx
			      printf "%s\t%s\tstrace\tall\t%d\n", w, c, total
			      for (k in n) printf "%s\t%s\tsyscall\t%s\t%d\n", w, c, k, n[k] }' "$f.strace" |
			sort -t$'\t' -k5,5nr >>"$hotraw"
		[ -n "$BENCH_KEEP_LOGS" ] || rm -f "$f.strace"
	fi
	wait "$bp" || log "hot path: pgbench $w -c $c failed (see $f.pgbench.out)"
}
if [ "$BENCH_HOTPATH" -gt 0 ]; then
	command -v strace >/dev/null 2>&1 || log "hot path: strace not found, wait events only"
	for w in "${active[@]}"; do
		[ "$w" = strict_inc ] || [ "${flushfig[$w]}" = yes ] || continue
		for c in $BENCH_CLIENTS; do
			log "hot path: $w, $c client(s)"
			hotpath_run "$w" "$c"
		done
	done
fi

# ---------------------------------------------------------------- memory
# shared memory of the lax buffer per key it can hold
shmem=$(q "SELECT a.size, a.allocated_size, current_setting('distkit.lax_capacity')
	FROM pg_shmem_allocations a WHERE a.name = 'distkit lax buffer'" 2>/dev/null | tr '|' ' ') || shmem=""
shmem_other=$(q "SELECT coalesce(string_agg(name || ': ' || allocated_size, ', ' ORDER BY name), 'none')
	FROM pg_shmem_allocations WHERE name LIKE 'distkit%' AND name <> 'distkit lax buffer'" 2>/dev/null) || shmem_other=""
lax_final=$(q "SELECT buffer_used, buffer_capacity, strict_fallbacks, flush_errors, dropped_deltas FROM distkit_stats" 2>/dev/null | tr '|' ' ') || lax_final=""

for w in $all; do case ${status[$w]} in failed*) failed=1 ;; esac; done

# ---------------------------------------------------------------- facts
bench_facts_end
# CPU seconds (user + sys) each master spent over the run
redis_cpu=$(for p in $("$rctl" masters | tr , ' '); do
	"$rctl" node-cli "$p" INFO cpu | tr -d '\r' | awk -F: -v p="$p" '/^used_cpu_(sys|user):/ { t += $2 } END { printf "%s %.1f s; ", p, t }'
done)
rinfo() { "$rctl" cli INFO server | tr -d '\r' | sed -n "s/^$1://p" | head -1; }	# the first master
rconf() { "$rctl" cli CONFIG GET "$1" | tail -1; }
pg_settings=$(q "SELECT string_agg(name || ' = ' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
	WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', 'wal_sync_method', 'max_connections', 'jit',
	               'distkit.connect_timeout', 'distkit.command_timeout', 'distkit.default_mode', 'distkit.prefix',
	               'distkit.lax_capacity', 'distkit.flush_interval')")

# ---------------------------------------------------------------- report
sum="$logs/summary.tsv"   # workload clients tps avg p50 p99 tps_min tps_max runs max_zero_pct
: >"$sum"
for w in "${active[@]}" redis_evalsha; do
	for c in $BENCH_CLIENTS; do
		col() { awk -F'\t' -v w="$w" -v c="$c" -v k="$1" 'NR > 1 && $2 == w && $3 == c {print $k}' "$raw"; }
		[ -n "$(col 4)" ] || continue
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$c" "$(col 4 | median)" "$(col 5 | median)" "$(col 6 | median)" \
			"$(col 7 | median)" "$(col 4 | sort -g | head -1)" "$(col 4 | sort -g | tail -1)" "$(col 4 | wc -l)" "$(col 9 | sort -g | tail -1)" >>"$sum"
	done
done
get() { awk -F'\t' -v w="$1" -v c="$2" -v k="$3" '$1 == w && $2 == c {print $k}' "$sum"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "–"; else printf "%.2f", a / b }'; }
ms() { awk -v a="$1" 'BEGIN { if (a == "") print "–"; else printf "%.3f", a }'; }
# a latency percentile (column 5 or 6) of a workload, marked as a lower bound
# when pgbench logged more than 1 % of its transactions as 0 us
pq() { local z; z=$(get "$1" "$2" 10); awk -v a="$(get "$1" "$2" "$3")" -v z="${z:-0}" 'BEGIN { if (a == "") print "–"; else printf "%s%.3f", (z > 1 ? "≥ " : ""), a }'; }
int() { awk -v a="$1" 'BEGIN { if (a == "") print "–"; else printf "%.0f", a }'; }

report="$out/$stamp.md"
{
	echo "# distkit benchmark — $started"
	echo
	echo "Command (as root, from the source tree; \`make bench\` runs the same with the defaults):"
	echo
	echo '```sh'
	echo "$BENCH_COMMAND"
	echo '```'
	echo
	echo "Each run is \`pgbench -n -M prepared -T $BENCH_SECONDS -c C -j C --log -f bench/workloads/<name>.sql\`"
	echo "(C in: $BENCH_CLIENTS) after a ${BENCH_WARMUP} s warm-up per workload. Runs are interleaved: each of the $BENCH_REPS"
	echo "repetitions runs every workload with every client count in turn, so machine drift spreads over"
	echo "all workloads. Figures are medians over the repetitions. Latencies are seen by the client"
	echo "(pgbench), so they include the client ↔ PostgreSQL round trip: avg is pgbench's \"latency"
	echo "average\" (clients × duration / transactions); p50 and p99 come from pgbench's per-transaction"
	echo "log (\`--log\`, every transaction of the run). pgbench 15 reads the clock lazily and logs a reply"
	echo "that was already waiting when its thread got the CPU back as 0 µs; where more than 1 % of a"
	echo "run's transactions were logged so (fast workloads with more client threads than CPUs), the"
	echo "percentile is marked \"≥\": a lower bound."
	echo "The redis-benchmark baseline is interleaved the same way. Finished $finished."
	echo
	case $BENCH_PIN in
	1client) echo "CPU placement (\`BENCH_PIN=1client\`): in the 1-client runs redis-server is pinned to CPU $((ncpu - 1)) and PostgreSQL, pgbench and redis-benchmark to CPU 0, so Redis is always one CPU hop away (as from another host) and 1-client figures are repeatable; runs with more clients use every CPU, placed by the scheduler." ;;
	all) echo "CPU placement (\`BENCH_PIN=all\`): in every run redis-server is pinned to CPU $((ncpu - 1)) and PostgreSQL, pgbench and redis-benchmark to CPU 0." ;;
	none) echo "CPU placement (\`BENCH_PIN=none\`): none; the scheduler places every process (1-client figures then vary by 2-3x with placement on a small VM)." ;;
	esac
	echo
	echo "## Machine"
	echo
	echo "| fact | value |"
	echo "| --- | --- |"
	bench_machine_rows
	echo "| PostgreSQL | $(q 'SHOW server_version') |"
	echo "| pgbench | $(pgbench --version | sed 's/^pgbench //') |"
	echo "| PostgreSQL settings | $pg_settings (otherwise initdb defaults) |"
	echo "| Redis mode | $BENCH_REDIS_MODE$([ "$BENCH_REDIS_MODE" = single ] || echo ": 3 masters, no replicas; Redis CPU seconds per master over the whole run: $redis_cpu") |"
	echo "| Redis | $(rinfo redis_version), appendonly $(rconf appendonly), appendfsync $(rconf appendfsync), save \"$(rconf save)\", io-threads $(rconf io-threads) |"
	echo "| redis-benchmark | $(redis-benchmark --version | sed 's/^redis-benchmark //') |"
	echo "| hiredis | $(dpkg-query -W -f='${Version}' libhiredis0.14 2>/dev/null || echo unknown) |"
	echo "| distkit | $(q "SELECT extversion FROM pg_extension WHERE extname = 'distkit'"), commit $BENCH_GIT |"
	echo "| connections | pgbench → PostgreSQL: Unix socket; PostgreSQL → Redis and redis-benchmark → Redis: TCP 127.0.0.1 |"
	if [ -n "$mport" ]; then
		echo "| the peer | pgmemcache $(dpkg-query -W -f='${Version}' postgresql-15-pgmemcache 2>/dev/null || echo unknown) (libmemcached $(dpkg-query -W -f='${Version}\n' 'libmemcached11*' 2>/dev/null | head -1), pgmemcache's default behaviour), memcached $(memcached -V 2>/dev/null | sed 's/^memcached //') (\`-U 0 -m 64\`, 4 threads by default) on TCP 127.0.0.1, pinned like Redis |"
	else
		echo "| the peer | not measured: $peer_note |"
	fi
	[ -z "$BENCH_PG_CONF" ] || echo "| extra postgresql.conf (BENCH_PG_CONF) | $BENCH_PG_CONF |"
	echo
	echo "## Strict distkit_inc against a raw Redis EVALSHA round trip (1 connection)"
	echo
	s_avg=$(get strict_inc 1 4); r_avg=$(get redis_evalsha 1 4); one_avg=$(get select1 1 4)
	if [ -n "$s_avg" ] && [ -n "$r_avg" ]; then
		echo "| per call | avg ms | p50 ms | p99 ms | calls/s |"
		echo "| --- | ---: | ---: | ---: | ---: |"
		echo "| strict \`distkit_inc\` via pgbench, 1 client | $(ms "$s_avg") | $(pq strict_inc 1 5) | $(pq strict_inc 1 6) | $(int "$(get strict_inc 1 3)") |"
		echo "| \`redis-benchmark -c 1\` EVALSHA, same script | $(ms "$r_avg") | $(ms "$(get redis_evalsha 1 5)") | $(ms "$(get redis_evalsha 1 6)") | $(int "$(get redis_evalsha 1 3)") |"
		[ -z "$one_avg" ] || echo "| \`SELECT 1\` via pgbench, 1 client | $(ms "$one_avg") | $(pq select1 1 5) | $(pq select1 1 6) | $(int "$(get select1 1 3)") |"
		echo
		echo "- Latency ratio strict \`distkit_inc\` / raw EVALSHA: **$(ratio "$s_avg" "$r_avg")** (average), $(ratio "$(get strict_inc 1 6)" "$(get redis_evalsha 1 6)") (p99)."
		echo "- Throughput ratio strict \`distkit_inc\` / raw EVALSHA, one connection: **$(ratio "$(get strict_inc 1 3)" "$(get redis_evalsha 1 3)")** (issue 7's target: ≥ 0.8)."
		if [ -n "$one_avg" ]; then
			echo "- What distkit adds to a SQL round trip: strict \`distkit_inc\` − \`SELECT 1\` = $(awk -v a="$s_avg" -v b="$one_avg" 'BEGIN { printf "%.3f", a - b }') ms per call, against $(ms "$r_avg") ms for the raw EVALSHA round trip."
		fi
		[ "$same_script" = unknown ] || echo "- Same script: distkit had loaded SHA1 \`$sha_expected\` of \`lua/counter_inc.lua\` before the baseline loaded it: $same_script."
	else
		echo "Not measured in this run (needs workloads strict_inc and the redis baseline with 1 client)."
	fi
	echo
	echo "## Ratios (issue 7)"
	echo
	echo "Ratios of median tps (same client count)."
	echo
	hdr="| ratio (tps)" sep="| ---"
	for c in $BENCH_CLIENTS; do hdr="$hdr | $c client$([ "$c" = 1 ] || echo s)"; sep="$sep | ---:"; done
	echo "$hdr | target |"
	echo "$sep | --- |"
	# ratio_row LABEL NUMERATOR DENOMINATOR TARGET
	ratio_row() {
		local line="| $1" c
		for c in $BENCH_CLIENTS; do line="$line | $(ratio "$(get "$2" "$c" 3)" "$(get "$3" "$c" 3)")"; done
		echo "$line | $4 |"
	}
	ratio_row "strict inc / raw EVALSHA (redis-benchmark)" strict_inc redis_evalsha "≥ 0.8 with one connection"
	ratio_row "strict inc / hot-row UPDATE" strict_inc update_hot "shown at 8 clients"
	ratio_row "strict inc / nextval" strict_inc nextval "–"
	ratio_row "lax inc (1 key) / nextval" lax_inc_1 nextval "≥ 1.0"
	ratio_row "lax inc (100 keys) / nextval" lax_inc_100 nextval "–"
	ratio_row "lax inc (10k keys) / nextval" lax_inc_10k nextval "–"
	ratio_row "lax inc (100k keys) / nextval" lax_inc_100k nextval "≥ 0.9 (issue 15)"
	ratio_row "lax inc (100k keys, warm: pre-touched) / nextval" lax_inc_100k_warm nextval "≥ 0.9 (issue 15)"
	ratio_row "transactional lax inc / lax inc (1 key)" lax_inc_txn lax_inc_1 "≥ 0.77 (≤ 1.3× the cost)"
	ratio_row "lax inc (1 key), track_calls on / off" lax_inc_1 lax_inc_1_untracked "≥ 0.95"
	ratio_row "strict inc / pgmemcache memcache_incr" strict_inc pgmemcache_incr "–"
	ratio_row "lax inc (1 key) / pgmemcache memcache_incr" lax_inc_1 pgmemcache_incr "–"
	ratio_row "instance-aware strict inc / strict inc" instance_inc_strict strict_inc "–"
	ratio_row "instance-aware lax inc / lax inc (1 key)" instance_inc_lax lax_inc_1 "–"
	ratio_row "lax rate_allow, saturated / lax inc (1 key)" rate_allow_lax lax_inc_1 "≥ 0.8 (issue 17)"
	ratio_row "lax rate_allow, open / lax inc (1 key)" rate_allow_lax_open lax_inc_1 "≥ 0.8 (issue 17)"
	ratio_row "lax rate_allow, saturated / strict rate_allow" rate_allow_lax rate_allow "–"
	echo
	echo "\"–\": not measured in this run."
	for c in $BENCH_CLIENTS; do
		echo
		echo "## Results, $c client$([ "$c" = 1 ] || echo s)"
		echo
		echo "| workload | median tps | avg ms | p50 ms | p99 ms | tps / SELECT 1 | tps / nextval | tps min–max over $BENCH_REPS runs |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
		for w in $all; do
			if [ "${status[$w]}" != ok ] || [ -z "$(get "$w" "$c" 3)" ]; then
				echo "| $w: ${title[$w]} | ${status[$w]} | | | | | | |"
				continue
			fi
			t=$(get "$w" "$c" 3)
			echo "| $w: ${title[$w]} | $(int "$t") | $(ms "$(get "$w" "$c" 4)") | $(pq "$w" "$c" 5) | $(pq "$w" "$c" 6) | $(ratio "$t" "$(get select1 "$c" 3)") | $(ratio "$t" "$(get nextval "$c" 3)") | $(int "$(get "$w" "$c" 7)")–$(int "$(get "$w" "$c" 8)") |"
		done
		t=$(get redis_evalsha "$c" 3)
		[ -z "$t" ] || echo "| redis-benchmark EVALSHA (no PostgreSQL) | $(int "$t") | $(ms "$(get redis_evalsha "$c" 4)") | $(ms "$(get redis_evalsha "$c" 5)") | $(ms "$(get redis_evalsha "$c" 6)") | $(ratio "$t" "$(get select1 "$c" 3)") | $(ratio "$t" "$(get nextval "$c" 3)") | $(int "$(get redis_evalsha "$c" 7)")–$(int "$(get redis_evalsha "$c" 8)") |"
	done
	if [ "$(wc -l <"$rateraw")" -gt 1 ]; then
		echo
		echo "## Lax rate limiting: Redis calls per decision"
		echo
		echo "Reservations (lua/rate_reserve.lua calls: the only Redis calls of lax rate limiting) and decisions"
		echo "counted by distkit_rate_stats around each run, summed over the repetitions (issue 17's goal: < 0.01)."
		echo
		echo "| workload | clients | decisions | allowed | reservations | Redis calls per decision |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: |"
		awk -F'\t' 'NR > 1 { k = $2 "\t" $3; r[k] += $4; d[k] += $5; a[k] += $6; if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
			END { for (i = 1; i <= n; i++) { split(order[i], f, "\t"); printf "| %s | %s | %d | %d | %d | %.5f |\n", f[1], f[2], d[order[i]], a[order[i]], r[order[i]], d[order[i]] ? r[order[i]] / d[order[i]] : 0 } }' "$rateraw"
	fi
	echo
	echo "## Lax counters: the flusher"
	echo
	if [ "$(wc -l <"$flushraw")" -gt 1 ]; then
		echo "Around every run of a lax workload (see Method in docs/benchmarks.md): increments = pgbench transactions;"
		echo "EVALSHA = Redis \`INFO commandstats\` calls of EVALSHA (+ EVAL; each flush EVALSHA of lua/lax_flush.lua runs 5 commands inside) from the start of the run until a"
		echo "\`distkit_flush()\` after it; strict fallbacks (increments the buffer could not take, counted by"
		echo "a strict EVALSHA instead) are subtracted from both before dividing; flusher CPU = CPU time of"
		echo "the \`distkit worker\` process (/proc/PID/schedstat) during the run, per second of run; Redis CPU the same for redis-server (all its work, strict fallbacks included). Medians"
		echo "over the $BENCH_REPS repetitions."
		echo
		echo "| workload | clients | increments/s | increments per flush EVALSHA | flush EVALSHA/s | flush cycles/s | keys per cycle | strict fallbacks | flusher CPU ms per s | flusher CPU µs per 1000 incs | Redis CPU ms per s |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
		for w in "${active[@]}"; do
			[ "${flushfig[$w]}" = yes ] || continue
			for c in $BENCH_CLIENTS; do
				fm() { awk -F'\t' -v w="$w" -v c="$c" "NR > 1 && \$2 == w && \$3 == c { $1 }" "$flushraw" | median; }
				[ "$(fm 'print 1')" != "-" ] || continue
				fb=$(awk -F'\t' -v w="$w" -v c="$c" 'NR > 1 && $2 == w && $3 == c { f += $10; n += $4 } END { if (n) printf "%.1f %% (%d of %d)", 100 * f / n, f, n; else print "–" }' "$flushraw")
				echo "| ${title[$w]} | $c | $(int "$(fm 'print $4 / $5')") | $(fm 'if ($6 - $10 > 0) printf "%.1f\n", ($4 - $10) / ($6 - $10)') | $(fm 'printf "%.1f\n", ($6 - $10) / $5') | $(fm 'printf "%.1f\n", $8 / $5') | $(fm 'if ($8 > 0) printf "%.1f\n", $9 / $8') | $fb | $(fm 'printf "%.2f\n", $12 / $5') | $(fm 'if ($4 > 0) printf "%.2f\n", 1000 * 1000 * $12 / $4') | $(fm 'printf "%.1f\n", $14 / $5') |"
			done
		done
		if awk -F'\t' 'NR > 1 && $13 != "yes" { bad = 1 } END { exit !bad }' "$flushraw"; then
			echo
			echo "Warning: the flusher's pid changed during at least one run (worker restarted); its CPU figure for that run is meaningless (see \`$stamp.flush.tsv\`)."
		fi
		echo
		if [ -n "$idle_cpu_ms" ]; then
			echo "Idle (no load, after \`distkit_flush()\`, ${idle_secs} s): flusher CPU **$(awk -v a="$idle_cpu_ms" -v s="$idle_secs" 'BEGIN { printf "%.3f", a / s }') ms per s** ($idle_cpu_ms ms in total); Redis calls meanwhile: $idle_calls."
		else
			echo "Idle flusher CPU: not measured (no flusher process found)."
		fi
		echo
		echo "Per repetition (first-touch cost): a lax call on a key this server holds no Redis total for"
		echo "reads the total first (one GET: a seeding read, \`distkit_stats.seed_reads\`), so a run over keys"
		echo "not yet in the buffer (cold) pays a round trip per new key that a run over buffered keys (warm)"
		echo "does not. tps / nextval uses the \`nextval\` run of the same repetition and client count."
		echo
		echo "| workload | clients | repetition | tps | tps / nextval (same repetition) | seed reads | seed reads per 1000 incs | Redis CPU ms per s | flusher CPU ms per s |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
		awk -F'\t' 'FNR == NR { if (FNR > 1) { t[$1 "\t" $2 "\t" $3] = $4 } next }
			FNR > 1 { k = $1 "\t" $2 "\t" $3; nv = t[$1 "\tnextval\t" $3]
				printf "%s\t%s\t%s\t%.0f\t%s\t%d\t%.1f\t%.1f\t%.2f\n", $2, $3, $1, t[k], nv ? sprintf("%.2f", t[k] / nv) : "–",
					$15, $4 ? 1000 * $15 / $4 : 0, $14 / $5, $12 / $5 }' "$raw" "$flushraw" |
			sort -t$'\t' -k1,1 -k2,2n -k3,3n | while IFS=$'\t' read -r w c r t tn sr spk rc fc; do
				echo "| ${title[$w]:-$w} | $c | $r | $t | $tn | $sr | $spk | $rc | $fc |"
			done
		for w in "${active[@]}"; do
			[ "${flushfig[$w]}" = yes ] && [ -n "${setup_ms[$w]:-}" ] || continue
			echo
			echo "Setup of ${title[$w]} (one session, before any run, unpinned): ${setup_ms[$w]} ms for the statements, in order:"
			directive "$w" setup | sed 's/^\(.*\)$/\`\1\`;/'
			echo "(for lax_inc_100k_warm: the first pass is 100,000 first touches, the second the same keys warm)."
		done
		echo
		echo "Raw figures: \`$stamp.flush.tsv\`."
	else
		echo "No lax workload ran."
	fi
	echo
	echo "## Lax counters: flush lag"
	echo
	if [ "$(wc -l <"$lagraw")" -gt 1 ]; then
		echo "\`bench/lag-probe.pl\`: one psql session calls \`distkit_inc('$lag_key', 1, 'lax')\` every 0–25 ms"
		echo "(random), then polls \`GET $lag_rkey\` on its own Redis connection (every 0.1 ms for 2 ms, then every"
		echo "0.5 ms) until the returned value shows; lag = from the reply of the call to the first GET that shows it."
		echo "Resolution: one poll (~0.1–0.3 ms below 2 ms, ~0.5–0.7 ms above). distkit.flush_interval = $(q "SHOW distkit.flush_interval"). ${BENCH_LAG} s per line; \"under load\":"
		echo "while pgbench runs that workload with that many clients (same CPU placement as its runs)."
		echo
		echo "| load | clients | samples | lag p50 ms | lag p99 ms | lag max ms | not visible in 5 s | probe call p50 ms | strict fallbacks meanwhile |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
		awk -F'\t' 'NR > 1 { print $1 "\t" $2 }' "$lagraw" | awk '!seen[$0]++' | while IFS=$'\t' read -r w c; do
			lagcol() { awk -F'\t' -v w="$w" -v c="$c" -v k="$1" 'NR > 1 && $1 == w && $2 == c && $4 >= 0 { print $k }' "$lagraw" | sort -g; }
			pct() { awk -v p="$1" '{ a[NR] = $1 } END { if (NR == 0) { print "–"; exit } i = int(p * NR); if (i < p * NR) i++; if (i < 1) i = 1; printf "%.2f", a[i] }'; }
			nall=$(awk -F'\t' -v w="$w" -v c="$c" 'NR > 1 && $1 == w && $2 == c' "$lagraw" | wc -l)
			nbad=$(awk -F'\t' -v w="$w" -v c="$c" 'NR > 1 && $1 == w && $2 == c && $4 < 0' "$lagraw" | wc -l)
			label=$([ "$w" = idle ] && echo "none (idle)" || echo "${title[$w]}")
			fbl=$(awk -F'\t' -v w="$w" -v c="$c" '$1 == w && $2 == c { print $3 }' "$logs/lag.fallbacks" 2>/dev/null)
			echo "| $label | $([ "$w" = idle ] && echo – || echo "$c") | $nall | $(lagcol 4 | pct 0.5) | $(lagcol 4 | pct 0.99) | $(lagcol 4 | pct 1) | $nbad | $(lagcol 3 | pct 0.5) | ${fbl:-–} |"
		done
		echo
		echo "With fewer than 100 samples the p99 is the maximum. Strict fallbacks meanwhile (load and probe"
		echo "together): when the buffer is full, a probe call may itself be counted strictly, and is then"
		echo "visible at once (lag ≈ one GET), which pulls that line's lag down."
		echo
		echo "Raw samples: \`$stamp.lag.tsv\`."
	else
		echo "Not measured in this run (no lax workload, or BENCH_LAG=0)."
	fi
	echo
	echo "## Hot path: waits and system calls"
	echo
	if [ "$(wc -l <"$hotraw")" -gt 1 ]; then
		echo "While pgbench runs the workload: the pgbench backends' wait events, 200 samples of"
		echo "\`pg_stat_activity\` 5 ms apart (share of backend-samples; CPU = no wait event, i.e. running or"
		echo "runnable; Client:ClientRead = waiting for pgbench; LWLock:distkit = waiting for the lax buffer's"
		echo "lock; Extension = waiting for Redis), then \`strace -f -yy\` on one backend for ${BENCH_HOTPATH} s:"
		echo "system calls per transaction (transactions = replies sent to pgbench; strict inc is the reference:"
		echo "its Redis round trip costs a sendto, a recvfrom and an epoll_wait or two). A lax increment should"
		echo "cost no system call of its own: only recvfrom + sendto to pgbench (plus an epoll_wait when the"
		echo "next request has not arrived yet); futex calls are sleeps on a lock."
		echo
		echo "| workload | clients | CPU | Client:ClientRead | LWLock:distkit | Extension (Redis) | other waits | syscalls per transaction | futex per 1000 transactions | syscalls (count in the trace) |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
		awk -F'\t' 'NR > 1 { print $1 "\t" $2 }' "$hotraw" | awk '!seen[$0]++' | while IFS=$'\t' read -r w c; do
			awk -F'\t' -v w="$w" -v c="$c" -v t="${title[$w]}" '
				NR > 1 && $1 == w && $2 == c {
					if ($3 == "wait") { ws += $5; if ($4 == "CPU") cpu += $5; else if ($4 == "Client:ClientRead") cr += $5;
						else if ($4 == "LWLock:distkit") lw += $5; else if ($4 ~ /^Extension:/) ex += $5; else { ot += $5; otn = otn (otn ? ", " : "") $4 } }
					else if ($3 == "strace" && $4 == "transactions") tx = $5
					else if ($3 == "strace" && $4 == "all") all = $5
					else if ($3 == "syscall") { sc = sc (sc ? ", " : "") $4 " " $5; if ($4 == "futex") fx = $5 }
				}
				function pc(x) { return ws ? sprintf("%.1f %%", 100 * x / ws) : "–" }
				END {
					printf "| %s | %s | %s | %s | %s | %s | %s%s | %s | %s | %s |\n", t, c, pc(cpu), pc(cr), pc(lw), pc(ex), pc(ot),
						(ot ? " (" otn ")" : ""), (tx ? sprintf("%.2f", all / tx) : "–"), (tx ? sprintf("%.1f", 1000 * fx / tx) : "–"),
						(sc ? sc : "–")
				}' "$hotraw"
		done
		echo
		echo "Raw counts: \`$stamp.hotpath.tsv\`."
	else
		echo "Not measured in this run (BENCH_HOTPATH=0 or no lax workload)."
	fi
	echo
	echo "## Lax counters: shared memory"
	echo
	if [ -n "$shmem" ]; then
		read -r sh_size sh_alloc sh_cap <<<"$shmem"
		echo "| what | value |"
		echo "| --- | ---: |"
		echo "| \`pg_shmem_allocations\` 'distkit lax buffer': size / allocated_size | $sh_size / $sh_alloc bytes ($(awk -v a="$sh_alloc" 'BEGIN { printf "%.1f MiB", a / 1048576 }')) |"
		echo "| \`distkit.lax_capacity\` (keys the buffer holds) | $sh_cap |"
		echo "| **shared memory per buffered key** (allocated_size / capacity) | **$(awk -v a="$sh_alloc" -v c="$sh_cap" 'BEGIN { printf "%.1f", a / c }') bytes** |"
		echo "| other distkit allocations | ${shmem_other:-none} |"
		if [ -n "$lax_final" ]; then
			read -r lf_used lf_cap lf_fb lf_err lf_drop <<<"$lax_final"
			echo "| at the end of the run: buffer_used / buffer_capacity | $lf_used / $lf_cap |"
			echo "| at the end of the run: strict_fallbacks, flush_errors, dropped_deltas (whole run) | $lf_fb, $lf_err, $lf_drop |"
		fi
	else
		echo "Not measured (no 'distkit lax buffer' in pg_shmem_allocations)."
	fi
	echo
	echo "## Redis baseline"
	echo
	echo "\`redis-benchmark -h 127.0.0.1 -p PORT -c C -n N --csv EVALSHA <sha1 of lua/counter_inc.lua> 1 '$rkey' 1\`"
	echo "after \`SCRIPT LOAD\`; N calibrated to about $BENCH_SECONDS s per run. Latencies are redis-benchmark's own (avg, p50, p99)."
	echo
	echo "| connections | median requests/s | avg ms | p50 ms | p99 ms | requests per run |"
	echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
	for c in $BENCH_CLIENTS; do
		[ -z "$(get redis_evalsha "$c" 3)" ] || echo "| $c | $(int "$(get redis_evalsha "$c" 3)") | $(ms "$(get redis_evalsha "$c" 4)") | $(ms "$(get redis_evalsha "$c" 5)") | $(ms "$(get redis_evalsha "$c" 6)") | ${rn[$c]} |"
	done
	echo
	echo "## Workloads"
	echo
	echo "| workload | status | what it measures | script |"
	echo "| --- | --- | --- | --- |"
	for w in $all; do
		echo "| $w: ${title[$w]} | ${status[$w]} | $(directive "$w" measures) | \`$(grep -v '^--' "$wdir/$w.sql" | tr '\n' ' ' | sed 's/ *$//; s/|/\\|/g')\`${pgopt[$w]:+ with \`PGOPTIONS='${pgopt[$w]}'\`} |"
	done
	echo
	echo "Raw figures of every run: \`$stamp.tsv\`."
} >"$report"

# ---------------------------------------------------------------- chart
if command -v gnuplot >/dev/null 2>&1; then
	dat="$logs/chart.dat"
	for w in "${active[@]}" redis_evalsha; do
		line=""
		for c in $BENCH_CLIENTS; do [ -z "$(get "$w" "$c" 3)" ] || line=x; done
		[ -n "$line" ] || continue
		line="\"$([ "$w" = redis_evalsha ] && echo 'redis-benchmark EVALSHA' || echo "${title[$w]}")\""
		for c in $BENCH_CLIENTS; do t=$(get "$w" "$c" 3); line="$line ${t:--}"; done
		echo "$line"
	done >"$dat"
	plot="" i=2
	for c in $BENCH_CLIENTS; do
		plot="$plot${plot:+, }'$dat' using $i$([ $i = 2 ] && echo ':xtic(1)') title '$c client$([ "$c" = 1 ] || echo s)'"
		i=$((i + 1))
	done
	if gnuplot 2>"$logs/gnuplot.err" <<GP; then
set terminal pngcairo size 1400,700 noenhanced font ",10"
set output '$out/$stamp.png'
set title "distkit benchmark $started: median tps by workload and client count (pgbench -M prepared, ${BENCH_SECONDS}s x $BENCH_REPS)"
set datafile missing '-'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set ylabel 'transactions per second (median)'
set yrange [0:*]
set grid ytics
set xtics rotate by -30 scale 0
set key top right
set bmargin 8
set rmargin 12
plot $plot
GP
		echo >>"$report"
		echo "![median tps by workload and client count]($stamp.png)" >>"$report"
	else
		log "gnuplot failed: $(head -3 "$logs/gnuplot.err")"
	fi
fi

log "report: $report"
[ "$failed" = 0 ] || { log "some workloads failed (see the report)"; exit 1; }
