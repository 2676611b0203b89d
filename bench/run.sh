#!/bin/bash
# distkit benchmark harness (issue 7): one command that starts its own
# redis-server and PostgreSQL (distkit preloaded) on loopback, runs every
# workload of bench/workloads.list with pgbench, adds a redis-benchmark
# baseline (EVALSHA of lua/counter_inc.lua), and writes a Markdown report
# (plus raw figures and, with gnuplot, a PNG chart) to bench/results/.
#
# As root (a fresh Debian bookworm machine): takes the machine lock, sets up
# (test/setup.sh: apt, user "distkit", build, install; gnuplot-nox for the
# chart), then re-runs itself as that user in a copy of the tree and copies
# the results back.  As any other user: expects distkit installed.
#
# Settings (environment):
#   BENCH_SECONDS   length of one pgbench / redis-benchmark run (default 10)
#   BENCH_REPS      repetitions; runs are interleaved (default 3)
#   BENCH_CLIENTS   client counts (default "1 8")
#   BENCH_WARMUP    seconds of warm-up per workload, 1 client (default 2)
#   BENCH_WORKLOADS names to run (default: all of bench/workloads.list)
#   BENCH_QUICK=1   smoke test: 2 s runs, 1 repetition, 1 s warm-up
#   BENCH_REDIS_APPENDONLY  Redis AOF for the run: no (default, Redis's own
#                   default) or yes (appendfsync always, as the test suite)
#   BENCH_REDIS_MODE  single (default) or cluster: a 3-master Redis Cluster
#                   (test/redis-ctl.sh), distkit.redis_url = redis-cluster://...
#   BENCH_PIN       CPU placement: 1client (default: pin 1-client runs, Redis
#                   on its own CPU), all, none; see place() below
#   BENCH_RESULTS   where the report goes (default bench/results)
#   BENCH_KEEP_LOGS=1  keep pgbench per-transaction logs (large)
# A run never fails on speed; it exits non-zero only when a workload fails
# (an error other than "function not available") or the set-up fails.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DISTKIT_USER=${DISTKIT_USER:-distkit}
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

if [ -n "${BENCH_QUICK:-}" ]; then
	: "${BENCH_SECONDS:=2}" "${BENCH_REPS:=1}" "${BENCH_WARMUP:=1}"
fi
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_REPS=${BENCH_REPS:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-1 8}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_WORKLOADS=${BENCH_WORKLOADS:-}
BENCH_REDIS_APPENDONLY=${BENCH_REDIS_APPENDONLY:-no}
BENCH_REDIS_MODE=${BENCH_REDIS_MODE:-single}
case $BENCH_REDIS_MODE in single | cluster) ;; *) echo "bench: BENCH_REDIS_MODE must be single or cluster" >&2; exit 2 ;; esac
export BENCH_REDIS_MODE
export BENCH_SECONDS BENCH_REPS BENCH_CLIENTS BENCH_WARMUP BENCH_WORKLOADS BENCH_REDIS_APPENDONLY
export BENCH_QUICK=${BENCH_QUICK:-} BENCH_KEEP_LOGS=${BENCH_KEEP_LOGS:-} BENCH_PIN=${BENCH_PIN:-1client}

# The command as a reader can repeat it (effective settings spelled out).
if [ -z "${BENCH_COMMAND:-}" ]; then
	BENCH_COMMAND="BENCH_SECONDS=$BENCH_SECONDS BENCH_REPS=$BENCH_REPS BENCH_CLIENTS='$BENCH_CLIENTS' BENCH_WARMUP=$BENCH_WARMUP"
	[ -z "$BENCH_WORKLOADS" ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_WORKLOADS='$BENCH_WORKLOADS'"
	[ "$BENCH_REDIS_APPENDONLY" = no ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_REDIS_APPENDONLY=$BENCH_REDIS_APPENDONLY"
	[ "$BENCH_PIN" = 1client ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_PIN=$BENCH_PIN"
	[ "$BENCH_REDIS_MODE" = single ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_REDIS_MODE=$BENCH_REDIS_MODE"
	BENCH_COMMAND="$BENCH_COMMAND bench/run.sh"
	if git -C "$here" rev-parse --short HEAD >/dev/null 2>&1; then
		BENCH_GIT="$(git -C "$here" rev-parse --short HEAD)$(git -C "$here" diff --quiet HEAD -- . 2>/dev/null || echo ' (with uncommitted changes)')"
	fi
fi
export BENCH_COMMAND BENCH_GIT=${BENCH_GIT:-unknown}

if [ "$(id -u)" = 0 ]; then
	# one distkit run at a time per machine: "make install" writes the
	# system-wide extension directory, and other runs would skew the figures
	exec 9>/tmp/distkit-test.lock
	flock 9
	"$here/test/setup.sh"
	if ! command -v gnuplot >/dev/null 2>&1; then
		echo "bench: installing gnuplot-nox (for the chart)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null 2>&1 ||
			{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null; } ||
			echo "bench: gnuplot-nox not installed; the report will have no chart" >&2
	fi
	work=${BENCH_WORKDIR:-/tmp/distkit-bench-src-$(printf '%s' "$here" | md5sum | cut -c1-8)}
	rm -rf "$work"
	mkdir -p "$work/results"
	(cd "$here" && tar --exclude=./bench/results -cf - bench test lua) | tar -xf - -C "$work"
	chown -R "$DISTKIT_USER:" "$work"
	rc=0
	runuser -u "$DISTKIT_USER" -- env PATH="$PATH" PG_CONFIG="$PG_CONFIG" BENCH_LOCKED=1 \
		BENCH_RESULTS="$work/results" BENCH_SECONDS="$BENCH_SECONDS" BENCH_REPS="$BENCH_REPS" \
		BENCH_CLIENTS="$BENCH_CLIENTS" BENCH_WARMUP="$BENCH_WARMUP" BENCH_WORKLOADS="$BENCH_WORKLOADS" \
		BENCH_REDIS_APPENDONLY="$BENCH_REDIS_APPENDONLY" BENCH_REDIS_MODE="$BENCH_REDIS_MODE" BENCH_QUICK="$BENCH_QUICK" \
		BENCH_KEEP_LOGS="$BENCH_KEEP_LOGS" BENCH_PIN="$BENCH_PIN" BENCH_COMMAND="$BENCH_COMMAND" BENCH_GIT="$BENCH_GIT" \
		bash "$work/bench/run.sh" || rc=$?
	out=${BENCH_RESULTS:-$here/bench/results}
	mkdir -p "$out"
	if ls "$work/results/"* >/dev/null 2>&1; then
		cp -r "$work/results/"* "$out/"
		echo "bench: results copied to $out: $(cd "$work/results" && ls | tr '\n' ' ')"
	fi
	exit "$rc"
fi

# ---------------------------------------------------------------- as the user
if [ -z "${BENCH_LOCKED:-}" ]; then
	# the root path holds the lock already; a direct run takes it here
	if [ -e /tmp/distkit-test.lock ]; then exec 9</tmp/distkit-test.lock; else exec 9>/tmp/distkit-test.lock; fi
	flock 9
fi
export PATH="$("$PG_CONFIG" --bindir):$PATH"
bdir="$here/bench"
wdir="$bdir/workloads"
out=${BENCH_RESULTS:-$bdir/results}
mkdir -p "$out"
base=/tmp/distkit-bench-$(id -un)
export DISTKIT_REDIS_DIR="$base/redis"
rctl="$here/test/redis-ctl.sh"
logs="$base/logs"

stop_all() {
	"$here/test/pg-ctl.sh" stop "$base/pg" >/dev/null 2>&1 || true
	"$rctl" stop >/dev/null 2>&1 || true
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
stop_all
rm -rf "$base"
mkdir -p "$logs"

for tool in pgbench psql redis-server redis-benchmark redis-cli; do
	command -v "$tool" >/dev/null || { echo "bench: $tool not found" >&2; exit 1; }
done

log() { echo "bench: $*"; }
# median of numbers on stdin ("-" when none)
median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# header directive of a workload script
directive() { sed -n "s/^-- $2: *//p" "$wdir/$1.sql"; }
cpu_stat() { awk '/^cpu /{t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $9; exit}' /proc/stat; }

started=$(date -u '+%Y-%m-%d %H:%M UTC')
stamp=$(date -u '+%Y%m%dT%H%M%SZ')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
read -r cpu_t0 steal_t0 < <(cpu_stat)

# ---------------------------------------------------------------- servers
# The servers must not inherit the lock's descriptor (fd 9): a server that
# outlived this run would keep every other run waiting.
DISTKIT_REDIS_MODE=$BENCH_REDIS_MODE "$rctl" init "$DISTKIT_REDIS_DIR" >/dev/null 9>&-
rport=$("$rctl" port)
rurl=$("$rctl" url)
if [ "$BENCH_REDIS_APPENDONLY" = no ]; then
	"$rctl" cli CONFIG SET appendonly no >/dev/null
fi
"$here/test/pg-ctl.sh" start "$base/pg" "$rurl" 9>&-
. "$base/pg/env"
psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION IF NOT EXISTS distkit' >/dev/null
log "Redis ($BENCH_REDIS_MODE: $rurl), PostgreSQL on 127.0.0.1:$PGPORT (socket $PGHOST)"

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

declare -A status title
active=()
for w in $all; do
	[ -f "$wdir/$w.sql" ] || { echo "bench: $wdir/$w.sql missing" >&2; exit 2; }
	title[$w]=$(directive "$w" title)
	[ -n "${title[$w]}" ] || title[$w]=$w
	st=ok
	while IFS= read -r probe; do
		[ -n "$probe" ] || continue
		if ! err=$(sql_probe "$probe"); then
			case $err in
			42883:* | 42704:* | 0A000:*) st="skipped: function not available ($err)" ;;
			*) st="failed: requirement check failed ($err)" ;;
			esac
			break
		fi
	done < <(directive "$w" requires)
	if [ "$st" = ok ]; then
		while IFS= read -r stmt; do
			[ -n "$stmt" ] || continue
			if ! err=$(sql_probe "$stmt"); then st="failed: setup failed ($err)"; break; fi
		done < <(directive "$w" setup)
	fi
	[ "$st" != ok ] || place 1
	if [ "$st" = ok ] && ! "${pin[@]}" pgbench -n -M prepared -T "$BENCH_WARMUP" -c 1 -j 1 -f "$wdir/$w.sql" >"$logs/$w.warmup.out" 2>&1; then
		st="failed: warm-up run failed: $(grep -m1 -E 'error|ERROR|aborted' "$logs/$w.warmup.out" || tail -1 "$logs/$w.warmup.out")"
	fi
	status[$w]=$st
	log "$w: $st"
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
# in a cluster, redis-benchmark talks to the master of the key's slot
if [ "$BENCH_REDIS_MODE" = cluster ]; then
	rslot=$("$rctl" cli CLUSTER KEYSLOT "$rkey")
	for p in $("$rctl" masters | tr , ' '); do
		"$rctl" node-cli "$p" CLUSTER NODES | awk -v s="$rslot" '/myself/ { for (i = 9; i <= NF; i++) { n = split($i, r, "-"); hi = n > 1 ? r[2] : r[1]; if (s + 0 >= r[1] + 0 && s + 0 <= hi + 0) found = 1 } } END { exit !found }' && rport=$p
	done
fi
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
	if ! "${pin[@]}" pgbench -n -M prepared -T "$BENCH_SECONDS" -c "$c" -j "$c" --log --log-prefix="$prefix" \
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

nclients=$(wc -w <<<"$BENCH_CLIENTS")
total=$(( BENCH_REPS * (${#active[@]} + 1) * nclients * BENCH_SECONDS ))
log "${#active[@]} workloads + redis baseline, clients: $BENCH_CLIENTS, $BENCH_REPS x ${BENCH_SECONDS}s each: about $((total / 60)) min $((total % 60)) s"
raw="$out/$stamp.tsv"
printf 'rep\tworkload\tclients\ttps\tavg_ms\tp50_ms\tp99_ms\ttransactions\tzero_latency_pct\n' >"$raw"
failed=0
for rep in $(seq 1 "$BENCH_REPS"); do
	for w in "${active[@]}" redis_evalsha; do
		for c in $BENCH_CLIENTS; do
			[ "${status[$w]:-ok}" = ok ] || continue
			place "$c"
			if [ "$w" = redis_evalsha ]; then
				r=$(redis_run "$c" "${rn[$c]}") || r=""
			else
				r=$(pgbench_run "$w" "$c" "$rep") || r=""
			fi
			if [ -z "$r" ]; then
				status[$w]="failed: run $rep with $c clients failed (see $logs)"
				log "$w: ${status[$w]}"
				failed=1
				continue
			fi
			read -r tps avg p50 p99 n zp <<<"$r"
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$w" "$c" "$tps" "$avg" "$p50" "$p99" "$n" "${zp:-0}" >>"$raw"
			printf 'bench: rep %s %-14s c=%-2s %10.0f tps  avg %.3f ms  p99 %.3f ms\n' "$rep" "$w" "$c" "$tps" "$avg" "$p99"
		done
	done
done
for w in $all; do case ${status[$w]} in failed*) failed=1 ;; esac; done

# ---------------------------------------------------------------- facts
read -r cpu_t1 steal_t1 < <(cpu_stat)
steal=$(awk -v a="$cpu_t0" -v b="$cpu_t1" -v s="$steal_t0" -v t="$steal_t1" 'BEGIN { printf "%.1f", (b > a) ? 100 * (t - s) / (b - a) : 0 }')
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# CPU seconds (user + sys) each master spent over the run
redis_cpu=$(for p in $("$rctl" masters | tr , ' '); do
	"$rctl" node-cli "$p" INFO cpu | tr -d '\r' | awk -F: -v p="$p" '/^used_cpu_(sys|user):/ { t += $2 } END { printf "%s %.1f s; ", p, t }'
done)
finished=$(date -u '+%Y-%m-%d %H:%M UTC')
q() { psql -X -A -t -q -c "$1"; }
rinfo() { "$rctl" cli INFO server | tr -d '\r' | sed -n "s/^$1://p"; }
rconf() { "$rctl" cli CONFIG GET "$1" | tail -1; }
cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
virt=$(systemd-detect-virt 2>/dev/null || true)
pg_settings=$(q "SELECT string_agg(name || ' = ' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
	WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', 'wal_sync_method', 'max_connections', 'jit',
	               'distkit.connect_timeout', 'distkit.command_timeout', 'distkit.default_mode', 'distkit.prefix')")

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
	echo "| CPUs (nproc) | $(nproc) |"
	echo "| CPU model | ${cpu_model:-unknown} |"
	echo "| virtualisation | ${virt:-unknown} |"
	echo "| memory | $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) |"
	echo "| kernel | $(uname -sr) |"
	echo "| load average before / after | $load_before / $load_after |"
	echo "| CPU steal during the run | $steal % |"
	echo "| PostgreSQL | $(q 'SHOW server_version') |"
	echo "| pgbench | $(pgbench --version | sed 's/^pgbench //') |"
	echo "| PostgreSQL settings | $pg_settings (otherwise initdb defaults) |"
	echo "| Redis mode | $BENCH_REDIS_MODE$([ "$BENCH_REDIS_MODE" = single ] || echo ": 3 masters, no replicas; Redis CPU seconds per master over the whole run: $redis_cpu") |"
	echo "| Redis | $(rinfo redis_version), appendonly $(rconf appendonly), appendfsync $(rconf appendfsync), save \"$(rconf save)\", io-threads $(rconf io-threads) |"
	echo "| redis-benchmark | $(redis-benchmark --version | sed 's/^redis-benchmark //') |"
	echo "| hiredis | $(dpkg-query -W -f='${Version}' libhiredis0.14 2>/dev/null || echo unknown) |"
	echo "| distkit | $(q "SELECT extversion FROM pg_extension WHERE extname = 'distkit'"), commit $BENCH_GIT |"
	echo "| connections | pgbench → PostgreSQL: Unix socket; PostgreSQL → Redis and redis-benchmark → Redis: TCP 127.0.0.1 |"
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
	echo "## Other ratios (issue 7)"
	echo
	lax_n=$(get lax_inc_1 1 3)
	echo "| ratio | 1 client | 8 clients | target |"
	echo "| --- | ---: | ---: | --- |"
	echo "| strict inc / raw EVALSHA (tps) | $(ratio "$(get strict_inc 1 3)" "$(get redis_evalsha 1 3)") | $(ratio "$(get strict_inc 8 3)" "$(get redis_evalsha 8 3)") | ≥ 0.8 with one connection |"
	echo "| strict inc / hot-row UPDATE (tps) | $(ratio "$(get strict_inc 1 3)" "$(get update_hot 1 3)") | $(ratio "$(get strict_inc 8 3)" "$(get update_hot 8 3)") | shown at 8 clients |"
	echo "| strict inc / nextval (tps) | $(ratio "$(get strict_inc 1 3)" "$(get nextval 1 3)") | $(ratio "$(get strict_inc 8 3)" "$(get nextval 8 3)") | – |"
	echo "| lax inc (1 key) / nextval (tps) | $(ratio "$lax_n" "$(get nextval 1 3)") | $(ratio "$(get lax_inc_1 8 3)" "$(get nextval 8 3)") | ≥ 1.0 |"
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
		echo "| $w: ${title[$w]} | ${status[$w]} | $(directive "$w" measures) | \`$(grep -v '^--' "$wdir/$w.sql" | tr '\n' ' ' | sed 's/ *$//; s/|/\\|/g')\` |"
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
