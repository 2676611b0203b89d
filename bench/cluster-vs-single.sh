#!/bin/bash
# distkit: a 3-master Redis Cluster against one Redis, in the same run
# (issue 11).  Starts one redis-server, a 3-master Redis Cluster (both with
# test/redis-ctl.sh, appendonly no) and one PostgreSQL with distkit preloaded
# (test/pg-ctl.sh), then for each repetition runs every workload against
# one Redis and against the cluster, switching distkit.redis_url with
# ALTER SYSTEM + pg_reload_conf() in between.  Per run it records pgbench's
# tps, the Redis CPU time of every node (INFO cpu, used_cpu_sys +
# used_cpu_user) and checks exactness: the increments pgbench counted equal
# what the workload's counters gained in Redis after distkit_flush().
# Writes bench/results/<stamp>-cluster-vs-single.md (and .tsv, the raw runs).
#
# As root (Debian bookworm), like bench/run.sh: takes the machine lock
# (/tmp/distkit-test.lock), runs test/setup.sh (apt, user "distkit", build,
# install), then re-runs itself as that user in a copy of the tree and
# copies the results back.  As any other user: expects distkit installed.
#
# What it shares with bench/run.sh (the lock, the run as the user in a copy
# of the tree, median) is in bench/lib.sh.
#
# Settings (environment):
#   BENCH_SECONDS    length of one pgbench run (default 8)
#   BENCH_REPS       repetitions (default 3)
#   BENCH_CLIENTS    client counts (default "1 8")
#   BENCH_WARMUP     seconds of 1-client warm-up per workload after each
#                    switch of distkit.redis_url (default 2)
#   BENCH_WORKLOADS  default "strict_inc lax_inc_1 strict_inc_1000 lax_inc_1000"
#                    (scripts in bench/workloads/; each must call distkit_inc
#                    on one literal key or on 'literal' || :var)
#   BENCH_PIN        1client (default: in 1-client runs every redis-server on
#                    the last CPU, PostgreSQL and pgbench on CPU 0), all, none
#   BENCH_RESULTS    where the report goes (default bench/results)
#   BENCH_KEEP_LOGS=1  keep the servers' directories and pgbench outputs
# Exit status: 0 when every run worked and every exactness check held.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DISTKIT_USER=${DISTKIT_USER:-distkit}
. "$here/bench/lib.sh"
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

BENCH_SECONDS=${BENCH_SECONDS:-8}
BENCH_REPS=${BENCH_REPS:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-1 8}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_WORKLOADS=${BENCH_WORKLOADS:-strict_inc lax_inc_1 strict_inc_1000 lax_inc_1000}
BENCH_PIN=${BENCH_PIN:-1client}
BENCH_KEEP_LOGS=${BENCH_KEEP_LOGS:-}
case $BENCH_PIN in none | 1client | all) ;; *) echo "cluster-vs-single: BENCH_PIN must be none, 1client or all" >&2; exit 2 ;; esac
export BENCH_SECONDS BENCH_REPS BENCH_CLIENTS BENCH_WARMUP BENCH_WORKLOADS BENCH_PIN BENCH_KEEP_LOGS

# The command as a reader can repeat it (settings that differ from the
# defaults spelled out).
if [ -z "${BENCH_COMMAND:-}" ]; then
	BENCH_COMMAND=""
	[ "$BENCH_SECONDS" = 8 ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_SECONDS=$BENCH_SECONDS"
	[ "$BENCH_REPS" = 3 ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_REPS=$BENCH_REPS"
	[ "$BENCH_CLIENTS" = "1 8" ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_CLIENTS='$BENCH_CLIENTS'"
	[ "$BENCH_WARMUP" = 2 ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_WARMUP=$BENCH_WARMUP"
	[ "$BENCH_WORKLOADS" = "strict_inc lax_inc_1 strict_inc_1000 lax_inc_1000" ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_WORKLOADS='$BENCH_WORKLOADS'"
	[ "$BENCH_PIN" = 1client ] || BENCH_COMMAND="$BENCH_COMMAND BENCH_PIN=$BENCH_PIN"
	BENCH_COMMAND="${BENCH_COMMAND# }${BENCH_COMMAND:+ }bench/cluster-vs-single.sh"
	if git -C "$here" rev-parse --short HEAD >/dev/null 2>&1; then
		BENCH_GIT="$(git -C "$here" rev-parse --short HEAD)$(git -C "$here" diff --quiet HEAD -- src lua sql/distkit.sql distkit.control Makefile 2>/dev/null || echo ' (with uncommitted changes to the extension)')"
	fi
fi
export BENCH_COMMAND BENCH_GIT=${BENCH_GIT:-unknown}

# ---------------------------------------------------------------- as root
if [ "$(id -u)" = 0 ]; then
	bench_lock cluster-vs-single
	"$here/test/setup.sh"
	bench_run_as_user cluster-vs-single distkit-cvs-src cluster-vs-single.sh
fi

# ---------------------------------------------------------------- as the user
bench_user_lock
export PATH="$("$PG_CONFIG" --bindir):$PATH"
for tool in pgbench psql redis-server redis-cli; do
	command -v "$tool" >/dev/null || { echo "cluster-vs-single: $tool not found" >&2; exit 1; }
done
[ "$BENCH_PIN" = none ] || command -v taskset >/dev/null || { echo "cluster-vs-single: BENCH_PIN=$BENCH_PIN needs taskset (util-linux)" >&2; exit 1; }

wdir="$here/bench/workloads"
out=${BENCH_RESULTS:-$here/bench/results}
mkdir -p "$out"
rctl="$here/test/redis-ctl.sh"
# a directory of our own: everything stopped at the end was started by this run
base=$(mktemp -d /tmp/distkit-cvs-XXXXXX)
logs="$base/logs"
mkdir -p "$logs"
declare -A rdir=([single]="$base/redis-single" [cluster]="$base/redis-cluster")
# redis MODE ARGS...: test/redis-ctl.sh for the single Redis or the cluster
redis() { local m=$1; shift; DISTKIT_REDIS_DIR=${rdir[$m]} "$rctl" "$@"; }

ok_end=0
stop_all() {
	"$here/test/pg-ctl.sh" stop "$base/pg" >/dev/null 2>&1 || true
	local m
	for m in single cluster; do
		[ ! -f "${rdir[$m]}/ports" ] || redis "$m" stop >/dev/null 2>&1 || true
	done
	if [ "$ok_end" = 1 ] && [ -z "$BENCH_KEEP_LOGS" ]; then
		rm -rf "$base"
	else
		echo "cluster-vs-single: servers stopped; logs kept in $base"
	fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { echo "cluster-vs-single: $*"; }
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 -c "$1"; }
bench_facts_begin

# ---------------------------------------------------------------- workloads
# the Redis keys a workload increments: a SCAN pattern per workload, from
# its distkit_inc('literal' ...) or distkit_inc('literal' || :var ...)
declare -A title pattern
workloads=()
for w in $BENCH_WORKLOADS; do
	[ -f "$wdir/$w.sql" ] || { echo "cluster-vs-single: $wdir/$w.sql missing" >&2; exit 2; }
	title[$w]=$(directive "$w" title)
	[ -n "${title[$w]}" ] || title[$w]=$w
	lit=$(grep -v '^--' "$wdir/$w.sql" | sed -n "s/.*distkit_inc('\([^']*\)'\( *||\)\{0,1\}.*/\1\2/p" | head -1)
	[ -n "$lit" ] || { echo "cluster-vs-single: $w: no distkit_inc('key' ...) call found, cannot check exactness" >&2; exit 2; }
	case $lit in
	*"||") pattern[$w]="$(sed 's/ *||$//' <<<"$lit")*" ;;	# 'bench.x.' || :k
	*) pattern[$w]=$lit ;;
	esac
	workloads+=("$w")
done

# ---------------------------------------------------------------- servers
# The servers must not inherit the lock's descriptor (fd 9): a server that
# outlived this run would keep every other run waiting.
for m in single cluster; do
	DISTKIT_REDIS_MODE=$m redis "$m" init "${rdir[$m]}" >/dev/null 9>&-
	# test/redis-ctl.sh writes appendonly yes (the test suite's setting);
	# bench/run.sh's default is Redis's own, no persistence (in cluster
	# mode "cli CONFIG" runs on every node)
	redis "$m" cli CONFIG SET appendonly no >/dev/null
done
declare -A url
url[single]=$(redis single url)
url[cluster]=$(redis cluster url)
single_port=$(redis single port)
masters=$(redis cluster masters | tr , ' ')
nodes="$single_port $masters"		# the CPU columns, in this order
"$here/test/pg-ctl.sh" start "$base/pg" "${url[single]}" 9>&-
. "$base/pg/env"
q 'CREATE EXTENSION IF NOT EXISTS distkit' >/dev/null
prefix=$(q "SHOW distkit.prefix")
log "one Redis: ${url[single]}; cluster: ${url[cluster]}; PostgreSQL on 127.0.0.1:$PGPORT (socket $PGHOST)"

# ---------------------------------------------------------------- helpers
# CPU placement, as bench/run.sh's BENCH_PIN: "1client" pins the 1-client
# runs (every redis-server, of both set-ups, on the last CPU; PostgreSQL,
# its children and pgbench on CPU 0), other runs use every CPU.
ncpu=$(nproc)
pin=()
place() {
	local want=no cpus_pg cpus_redis p pgpid m
	[ "$BENCH_PIN" = all ] || { [ "$BENCH_PIN" = 1client ] && [ "$1" = 1 ]; } && want=yes
	[ "$BENCH_PIN" != none ] || return 0
	if [ "$want" = yes ] && [ "$ncpu" -ge 2 ]; then
		cpus_pg=0 cpus_redis=$((ncpu - 1)) pin=(taskset -c 0)
	else
		cpus_pg=0-$((ncpu - 1)) cpus_redis=$cpus_pg pin=()
	fi
	for m in single cluster; do
		for p in $(redis "$m" pidfiles); do taskset -a -p -c "$cpus_redis" "$(cat "$p")" >/dev/null; done
	done
	pgpid=$(head -1 "$base/pg/data/postmaster.pid")
	for p in $pgpid $(pgrep -P "$pgpid"); do taskset -a -p -c "$cpus_pg" "$p" >/dev/null 2>&1 || true; done
}

# CPU seconds (used_cpu_sys + used_cpu_user) of every node, in $nodes order
cpu_snap() {
	local p
	for p in $nodes; do
		redis single node-cli "$p" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { t += $2 } END { printf "%.6f ", t }'
	done
}

# redis_sum MODE WORKLOAD: "total keys_on_master1/keys_on_master2/..." of the
# workload's counters, read from every master with SCAN + GET (not through
# distkit)
redis_sum() {
	local m=$1 w=$2 p total=0 counts="" n s
	for p in $(redis "$m" masters | tr , ' '); do
		redis "$m" node-cli "$p" --scan --pattern "$prefix:c:{${pattern[$w]}}" >"$logs/scan"
		n=$(grep -c . "$logs/scan" || true)
		s=0
		if [ "$n" -gt 0 ]; then
			s=$(sed 's/^/GET /' "$logs/scan" | redis "$m" node-cli "$p" | awk '{ t += $1 } END { printf "%d", t }')
		fi
		total=$((total + s))
		counts="$counts${counts:+/}$n"
	done
	echo "$total $counts"
}

# switch MODE: point distkit.redis_url at that Redis and wait until new
# sessions and the flusher use it: a lax increment of a probe key must reach
# the new Redis through distkit_flush()
switch_to() {
	local m=$1 before after rkey="$prefix:c:{bench.switch}"
	q "SELECT distkit_flush()" >/dev/null	# nothing pending for the old one
	q "ALTER SYSTEM SET distkit.redis_url = '${url[$m]}'" >/dev/null
	q "SELECT pg_reload_conf()" >/dev/null
	for _ in $(seq 1 100); do
		[ "$(q 'SHOW distkit.redis_url')" = "${url[$m]}" ] && break
		sleep 0.05
	done
	for _ in $(seq 1 100); do
		before=$(redis "$m" cli --raw GET "$rkey")
		q "SELECT distkit_inc('bench.switch', 1, 'lax')" >/dev/null
		q "SELECT distkit_flush()" >/dev/null
		after=$(redis "$m" cli --raw GET "$rkey")
		[ "${after:-0}" -gt "${before:-0}" ] && return 0
		sleep 0.1
	done
	echo "cluster-vs-single: distkit did not switch to $m (${url[$m]}) within 10 s" >&2
	return 1
}

# pgbench_run WORKLOAD CLIENTS FILE: prints "tps avg_ms transactions"
pgbench_run() {
	local w=$1 c=$2 f=$3
	if ! PGOPTIONS=$(directive "$w" pgoptions) "${pin[@]}" pgbench -n -M prepared -T "$BENCH_SECONDS" -c "$c" -j "$c" \
		-f "$wdir/$w.sql" >"$f" 2>&1; then
		cat "$f" >&2
		return 1
	fi
	echo "$(awk '/^tps = /{print $3; exit}' "$f") $(awk '/^latency average = /{print $4; exit}' "$f") $(awk -F': *' '/^number of transactions actually processed:/{split($2, a, "/"); print a[1]; exit}' "$f")"
}

# ---------------------------------------------------------------- requirements
for w in "${workloads[@]}"; do
	while IFS= read -r stmt; do
		[ -z "$stmt" ] || q "$stmt" >/dev/null
	done < <(directive "$w" requires; directive "$w" setup)
done

# ---------------------------------------------------------------- runs
nclients=$(wc -w <<<"$BENCH_CLIENTS")
total=$((BENCH_REPS * 2 * ${#workloads[@]} * (nclients * (BENCH_SECONDS + 2) + BENCH_WARMUP + 1)))
log "${#workloads[@]} workloads x clients ($BENCH_CLIENTS) x 2 set-ups x $BENCH_REPS repetitions of ${BENCH_SECONDS}s: about $((total / 60)) min $((total % 60)) s"
raw="$out/$stamp-cluster-vs-single.tsv"
{
	printf 'rep\tmode\tworkload\tclients\ttps\tavg_ms\ttransactions\tredis_before\tredis_after\texact\tkeys_per_master\tseconds'
	for p in $nodes; do
		if [ "$p" = "$single_port" ]; then printf '\tcpu_s_single_%s' "$p"; else printf '\tcpu_s_cluster_%s' "$p"; fi
	done
	printf '\n'
} >"$raw"
failed=0 inexact=0
for rep in $(seq 1 "$BENCH_REPS"); do
	# alternate which set-up goes first, so drift within a repetition
	# does not always favour the same one
	if [ $((rep % 2)) = 1 ]; then order="single cluster"; else order="cluster single"; fi
	for m in $order; do
		switch_to "$m"
		for w in "${workloads[@]}"; do
			place 1
			if ! PGOPTIONS=$(directive "$w" pgoptions) "${pin[@]}" pgbench -n -M prepared -T "$BENCH_WARMUP" -c 1 -j 1 \
				-f "$wdir/$w.sql" >"$logs/$w.$m.r$rep.warmup.out" 2>&1; then
				log "FAIL: warm-up of $w against $m failed: $(grep -m1 -E 'error|ERROR|aborted' "$logs/$w.$m.r$rep.warmup.out" || tail -1 "$logs/$w.$m.r$rep.warmup.out")"
				failed=1
				continue
			fi
			for c in $BENCH_CLIENTS; do
				place "$c"
				q "SELECT distkit_flush()" >/dev/null
				read -r before _ < <(redis_sum "$m" "$w")
				cpu0=$(cpu_snap)
				t0=$(date +%s%N)
				if ! r=$(pgbench_run "$w" "$c" "$logs/$w.$m.c$c.r$rep.out"); then
					log "FAIL: rep $rep $m $w c=$c: pgbench failed (see $logs)"
					failed=1
					continue
				fi
				q "SELECT distkit_flush()" >/dev/null
				t1=$(date +%s%N)
				cpu1=$(cpu_snap)
				read -r after keys < <(redis_sum "$m" "$w")
				read -r tps avg n <<<"$r"
				if [ "$((after - before))" = "$n" ]; then
					exact=yes
				else
					exact=no inexact=1
					log "FAIL: rep $rep $m $w c=$c: pgbench counted $n increments, the counters in Redis gained $((after - before)) ($before -> $after)"
				fi
				{
					printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$rep" "$m" "$w" "$c" "$tps" "$avg" "$n" "$before" "$after" "$exact" "$keys" \
						"$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
					paste <(tr ' ' '\n' <<<"$cpu0" | sed '/^$/d') <(tr ' ' '\n' <<<"$cpu1" | sed '/^$/d') | awk '{ printf "\t%.3f", $2 - $1 }'
					printf '\n'
				} >>"$raw"
				printf 'cluster-vs-single: rep %s %-7s %-16s c=%-2s %9.0f tps  avg %.3f ms  exact: %s\n' "$rep" "$m" "$w" "$c" "$tps" "$avg" "$exact"
			done
		done
	done
done
# leave the server as it was set up: pointing at one Redis
switch_to single || true

# ---------------------------------------------------------------- facts
bench_facts_end
rinfo() { redis single cli INFO server | tr -d '\r' | sed -n "s/^$1://p" | head -1; }
rconf() { redis "$1" cli CONFIG GET "$2" | sed -n 2p; }
# CPU seconds of every node over the whole run (set-up included)
node_total() { redis single node-cli "$1" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { t += $2 } END { printf "%.1f", t }'; }
pg_settings=$(q "SELECT string_agg(name || ' = ' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
	WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', 'max_connections', 'jit',
	               'distkit.default_mode', 'distkit.prefix', 'distkit.lax_capacity', 'distkit.flush_interval')")

# ---------------------------------------------------------------- report
# col MODE WORKLOAD CLIENTS COLUMN: that column of every run, one a line
col() { awk -F'\t' -v m="$1" -v w="$2" -v c="$3" -v k="$4" 'NR > 1 && $2 == m && $3 == w && $4 == c { print $k }' "$raw"; }
int() { awk -v a="$1" 'BEGIN { if (a == "" || a == "-") print "–"; else printf "%.0f", a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b == 0) print "–"; else printf "%.2f", a / b }'; }
cpucol() {	# column number of node $1 in the raw file
	local i=13 p
	for p in $nodes; do [ "$p" = "$1" ] && { echo "$i"; return; }; i=$((i + 1)); done
}
report="$out/$stamp-cluster-vs-single.md"
met_all=yes
{
	echo "# distkit: a 3-master Redis Cluster against one Redis, same run — $started"
	echo
	echo "Command (as root, from the source tree):"
	echo
	echo '```sh'
	echo "$BENCH_COMMAND"
	echo '```'
	echo
	echo "distkit commit $BENCH_GIT. Finished $finished."
	echo
	echo "One PostgreSQL, one redis-server and a 3-master Redis Cluster (no replicas) run side by side."
	echo "Each of the $BENCH_REPS repetitions runs every workload against both, switching"
	echo "\`distkit.redis_url\` with \`ALTER SYSTEM\` + \`pg_reload_conf()\` (and waiting until a lax"
	echo "increment reaches the new Redis, so the flusher has switched too); odd repetitions run one"
	echo "Redis first, even ones the cluster first. After each switch every workload gets a ${BENCH_WARMUP} s"
	echo "1-client warm-up, then \`pgbench -n -M prepared -T $BENCH_SECONDS -c C -j C\` for C in $BENCH_CLIENTS."
	echo "tps: medians over the repetitions (min–max in brackets). Around every run: \`distkit_flush()\`,"
	echo "\`INFO cpu\` (used_cpu_sys + used_cpu_user) of every Redis node, and the sum of the workload's"
	echo "counters read from every master with \`SCAN\` + \`GET\` (not through distkit); after the run"
	echo "\`distkit_flush()\` again, then the same readings. Exact = the counters gained exactly the"
	echo "transactions pgbench counted."
	echo
	case $BENCH_PIN in
	1client) echo "CPU placement (\`BENCH_PIN=1client\`, as bench/run.sh): in 1-client runs and warm-ups every redis-server (one Redis and the 3 masters) is pinned to CPU $((ncpu - 1)), PostgreSQL (with its backends and the flusher) and pgbench to CPU 0; runs with more clients use every CPU." ;;
	all) echo "CPU placement (\`BENCH_PIN=all\`): every redis-server on CPU $((ncpu - 1)), PostgreSQL and pgbench on CPU 0, in every run." ;;
	none) echo "CPU placement (\`BENCH_PIN=none\`): none." ;;
	esac
	echo
	echo "## Machine"
	echo
	echo "| fact | value |"
	echo "| --- | --- |"
	bench_machine_rows
	echo "| PostgreSQL | $(q 'SHOW server_version') |"
	echo "| PostgreSQL settings | $pg_settings (otherwise initdb defaults) |"
	echo "| Redis | $(rinfo redis_version); one Redis: appendonly $(rconf single appendonly), save \"$(rconf single save)\"; cluster: 3 masters, no replicas, appendonly $(rconf cluster appendonly), save \"$(rconf cluster save)\", cluster-node-timeout $(rconf cluster cluster-node-timeout) ms |"
	echo "| Redis ports | one Redis $single_port; cluster masters $(tr ' ' ',' <<<"$masters") |"
	echo "| hiredis | $(dpkg-query -W -f='${Version}' libhiredis0.14 2>/dev/null || echo unknown) |"
	echo "| connections | pgbench → PostgreSQL: Unix socket; PostgreSQL → Redis: TCP 127.0.0.1 |"
	echo
	echo "## Throughput: cluster / one Redis"
	echo
	echo "Issue 11's target: the cluster within 0.9× of one Redis (ratio of median tps ≥ 0.90)."
	echo
	echo "| workload | clients | one Redis tps (min–max) | cluster tps (min–max) | cluster / one | per repetition | ≥ 0.9× |"
	echo "| --- | ---: | ---: | ---: | ---: | --- | --- |"
	for w in "${workloads[@]}"; do
		for c in $BENCH_CLIENTS; do
			s=$(col single "$w" "$c" 5 | median)
			k=$(col cluster "$w" "$c" 5 | median)
			rt=$(ratio "$k" "$s")
			per=$(awk -F'\t' -v w="$w" -v c="$c" 'NR > 1 && $3 == w && $4 == c { t[$1 " " $2] = $5; if ($1 + 0 > mx) mx = $1 + 0 }
				END { for (i = 1; i <= mx; i++) { a = t[i " single"]; b = t[i " cluster"]
					out = out (i > 1 ? ", " : "") ((a > 0 && b != "") ? sprintf("%.2f", b / a) : "–") } print out }' "$raw")
			if [ "$rt" = "–" ]; then met="not measured"; met_all=no
			elif awk -v r="$rt" 'BEGIN { exit !(r >= 0.9) }'; then met=yes
			else met="**no**"; met_all=no; fi
			echo "| ${title[$w]} | $c | $(int "$s") ($(int "$(col single "$w" "$c" 5 | sort -g | head -1)")–$(int "$(col single "$w" "$c" 5 | sort -g | tail -1)")) | $(int "$k") ($(int "$(col cluster "$w" "$c" 5 | sort -g | head -1)")–$(int "$(col cluster "$w" "$c" 5 | sort -g | tail -1)")) | **$rt** | $per | $met |"
		done
	done
	echo
	echo "Target met in every cell: $met_all."
	echo
	echo "## Redis CPU per node"
	echo
	echo "CPU seconds (used_cpu_sys + used_cpu_user) each node spent during one run (from just before"
	echo "pgbench starts to after the \`distkit_flush()\` that follows it), median over the repetitions."
	echo "The nodes of the set-up not in use idle meanwhile (cluster bus, cron); their figures show"
	echo "that background."
	echo
	hdr="| workload | clients | set-up | one Redis ($single_port)"
	sep="| --- | ---: | --- | ---:"
	for p in $masters; do hdr="$hdr | master $p"; sep="$sep | ---:"; done
	echo "$hdr | cluster masters together | busiest master's share | keys per master |"
	echo "$sep | ---: | ---: | --- |"
	for w in "${workloads[@]}"; do
		for c in $BENCH_CLIENTS; do
			for m in single cluster; do
				[ -n "$(col "$m" "$w" "$c" 5)" ] || continue
				line="| ${title[$w]} | $c | $([ "$m" = single ] && echo 'one Redis' || echo cluster)"
				sumc=0 maxc=0
				for p in $nodes; do
					v=$(col "$m" "$w" "$c" "$(cpucol "$p")" | median)
					line="$line | $(awk -v v="$v" 'BEGIN { printf "%.2f", v }')"
					if [ "$p" != "$single_port" ]; then
						sumc=$(awk -v a="$sumc" -v v="$v" 'BEGIN { print a + v }')
						maxc=$(awk -v a="$maxc" -v v="$v" 'BEGIN { print (v > a) ? v : a }')
					fi
				done
				share="–"
				[ "$m" != cluster ] || share=$(awk -v a="$maxc" -v s="$sumc" 'BEGIN { if (s > 0) printf "%.0f %%", 100 * a / s; else print "–" }')
				keys="–"
				[ "$m" != cluster ] || keys=$(col "$m" "$w" "$c" 11 | tail -1)
				echo "$line | $(awk -v v="$sumc" 'BEGIN { printf "%.2f", v }') | $share | $keys |"
			done
		done
	done
	echo
	echo "Keys per master: how many of the workload's counters each master holds (SCAN), in the"
	echo "column order above. With one key every call goes to one master; with 1000 keys, hash-tagged"
	echo "\`{key}\`, they spread over the 16384 slots and so over the masters."
	echo
	totals=""
	for p in $nodes; do totals="$totals${totals:+, }$p: $(node_total "$p") s"; done
	echo "CPU seconds of each node over the whole run, set-up and idle time included: $totals (the first is the one Redis)."
	echo
	echo "## Exactness"
	echo
	echo "Per run: increments counted by pgbench (transactions actually processed) against what the"
	echo "workload's counters gained in that Redis after \`distkit_flush()\`."
	echo
	echo "| workload | clients | set-up | runs | increments (pgbench) | gained in Redis | exact |"
	echo "| --- | ---: | --- | ---: | ---: | ---: | --- |"
	for w in "${workloads[@]}"; do
		for c in $BENCH_CLIENTS; do
			for m in single cluster; do
				awk -F'\t' -v m="$m" -v w="$w" -v c="$c" -v t="${title[$w]}" -v l="$([ "$m" = single ] && echo 'one Redis' || echo cluster)" '
					NR > 1 && $2 == m && $3 == w && $4 == c { n++; inc += $7; got += $9 - $8; if ($10 != "yes") bad++ }
					END { if (n) printf "| %s | %s | %s | %d | %d | %d | %s |\n", t, c, l, n, inc, got, bad ? "**FAIL** (" bad " of " n " runs)" : "yes" }' "$raw"
			done
		done
	done
	echo
	if [ "$inexact" = 0 ]; then echo "Every run was exact."; else echo "**FAIL: at least one run was not exact** (see the table and \`$stamp-cluster-vs-single.tsv\`)."; fi
	[ "$failed" = 0 ] || { echo; echo "**Some runs failed** (see the script's output)."; }
	echo
	echo "## Workloads"
	echo
	echo "| workload | what it measures | script |"
	echo "| --- | --- | --- |"
	for w in "${workloads[@]}"; do
		echo "| $w: ${title[$w]} | $(directive "$w" measures) | \`$(grep -v '^--' "$wdir/$w.sql" | tr '\n' ' ' | sed 's/ *$//; s/|/\\|/g')\` |"
	done
	echo
	echo "Raw figures of every run: \`$stamp-cluster-vs-single.tsv\`."
} >"$report"

log "report: $report"
[ "$inexact" != 0 ] || [ "$failed" != 0 ] || ok_end=1
[ "$inexact" = 0 ] || { log "FAIL: exactness did not hold in at least one run (see the report)"; exit 1; }
[ "$failed" = 0 ] || { log "FAIL: some runs failed"; exit 1; }
log "every run exact; target 0.9x met in every cell: $met_all"
