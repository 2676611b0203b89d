#!/bin/bash
# distkit: TLS (rediss://) against plaintext (redis://) to one Redis, in the
# same run (issue 16).  Starts one redis-server that listens on a plaintext
# port and a TLS port (certificates of test/certs.sh), one PostgreSQL with
# distkit preloaded (test/pg-ctl.sh, distkit.tls_ca_file set), then for each
# repetition runs strict and lax distkit_inc over both, switching
# distkit.redis_url with ALTER SYSTEM + pg_reload_conf() in between (odd
# repetitions plaintext first, even ones TLS first).  Also measures the
# connection set-up: pgbench -C (a new PostgreSQL session, so a new Redis
# connection and, over TLS, a full handshake, per transaction) of one strict
# distkit_get.  Exactness: the increments pgbench counted equal what the
# counter gained in Redis after distkit_flush().
# Writes bench/results/<stamp>-tls-vs-plain.md (and .tsv, the raw runs).
#
# As root, like bench/cluster-vs-single.sh: takes the machine lock, runs
# test/setup.sh, then re-runs itself as the user in a copy of the tree.
# Settings: BENCH_SECONDS (8), BENCH_REPS (3), BENCH_CLIENTS ("1 8"),
# BENCH_PIN (1client: 1-client runs with redis-server on the last CPU,
# PostgreSQL and pgbench on CPU 0; none), BENCH_RESULTS.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DISTKIT_USER=${DISTKIT_USER:-distkit}
. "$here/bench/lib.sh"
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BENCH_SECONDS=${BENCH_SECONDS:-8}
BENCH_REPS=${BENCH_REPS:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-1 8}
BENCH_PIN=${BENCH_PIN:-1client}
export BENCH_SECONDS BENCH_REPS BENCH_CLIENTS BENCH_PIN
export BENCH_COMMAND=${BENCH_COMMAND:-"BENCH_SECONDS=$BENCH_SECONDS BENCH_REPS=$BENCH_REPS BENCH_CLIENTS='$BENCH_CLIENTS' BENCH_PIN=$BENCH_PIN bench/tls-vs-plain.sh"}
export BENCH_GIT=${BENCH_GIT:-$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)}

if [ "$(id -u)" = 0 ]; then
	bench_lock tls-vs-plain
	"$here/test/setup.sh"
	bench_run_as_user tls-vs-plain distkit-tvp-src tls-vs-plain.sh
fi

bench_user_lock
export PATH="$("$PG_CONFIG" --bindir):$PATH"
out=${BENCH_RESULTS:-$here/bench/results}
mkdir -p "$out"
rctl="$here/test/redis-ctl.sh"
base=$(mktemp -d /tmp/distkit-tvp-XXXXXX)
export DISTKIT_REDIS_DIR="$base/redis"
stop_all() {
	"$here/test/pg-ctl.sh" stop "$base/pg" >/dev/null 2>&1 || true
	[ ! -f "$DISTKIT_REDIS_DIR/ports" ] || "$rctl" stop >/dev/null 2>&1 || true
	echo "tls-vs-plain: servers stopped; logs in $base"
}
trap stop_all EXIT
log() { echo "tls-vs-plain: $*"; }
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 -c "$1"; }
bench_facts_begin

# one Redis: the TLS port of redis-ctl.sh plus a plaintext port of its own
DISTKIT_REDIS_TLS=1 "$rctl" init "$DISTKIT_REDIS_DIR" >/dev/null 9>&-
"$rctl" cli CONFIG SET appendonly no >/dev/null
tls_port=$("$rctl" port)
certs=$("$rctl" certs)
for _ in $(seq 1 50); do
	plain_port=$((20000 + RANDOM % 12768))
	(exec 3<>"/dev/tcp/127.0.0.1/$plain_port") 2>/dev/null || break
done
"$rctl" cli CONFIG SET port "$plain_port" >/dev/null
declare -A url=([plain]="redis://127.0.0.1:$plain_port/0" [tls]="rediss://127.0.0.1:$tls_port/0")
"$here/test/pg-ctl.sh" start "$base/pg" "${url[plain]}" "distkit.tls_ca_file = '$certs/ca.crt'" 9>&-
. "$base/pg/env"
q 'CREATE EXTENSION IF NOT EXISTS distkit' >/dev/null
prefix=$(q "SHOW distkit.prefix")
rget() { "$rctl" cli --raw GET "$prefix:c:{$1}" | sed 's/^$/0/'; }

ncpu=$(nproc)
pin=()
place() {
	local p pgpid cpus_pg=0-$((ncpu - 1)) cpus_redis=0-$((ncpu - 1))
	pin=()
	[ "$BENCH_PIN" != none ] || return 0
	if [ "$BENCH_PIN" = 1client ] && [ "$1" = 1 ] && [ "$ncpu" -ge 2 ]; then
		cpus_pg=0 cpus_redis=$((ncpu - 1)) pin=(taskset -c 0)
	fi
	taskset -a -p -c "$cpus_redis" "$(cat "$("$rctl" pidfile)")" >/dev/null
	pgpid=$(head -1 "$base/pg/data/postmaster.pid")
	for p in $pgpid $(pgrep -P "$pgpid"); do taskset -a -p -c "$cpus_pg" "$p" >/dev/null 2>&1 || true; done
}

switch_to() {
	local m=$1 before after
	q "SELECT distkit_flush()" >/dev/null
	q "ALTER SYSTEM SET distkit.redis_url = '${url[$m]}'" >/dev/null
	q "SELECT pg_reload_conf()" >/dev/null
	for _ in $(seq 1 100); do
		before=$(rget bench.switch)
		[ "$(q "SELECT distkit_inc('bench.switch', 1, 'lax'), distkit_flush()" >/dev/null; rget bench.switch)" -gt "$before" ] &&
			[ "$(q 'SHOW distkit.redis_url')" = "${url[$m]}" ] && return 0
		sleep 0.1
	done
	echo "tls-vs-plain: could not switch to $m" >&2
	return 1
}

printf 'SELECT distkit_inc(%s, 1, %s);\n' "'bench.tls.strict'" "'strict'" >"$base/strict.sql"
printf 'SELECT distkit_inc(%s, 1, %s);\n' "'bench.tls.lax'" "'lax'" >"$base/lax.sql"
printf 'SELECT distkit_get(%s);\n' "'bench.tls.strict'" >"$base/connect.sql"
raw="$out/$stamp-tls-vs-plain.tsv"
printf 'rep\tmode\tworkload\tclients\ttps\tavg_ms\ttransactions\texact\n' >"$raw"
failed=0
for rep in $(seq 1 "$BENCH_REPS"); do
	if [ $((rep % 2)) = 1 ]; then order="plain tls"; else order="tls plain"; fi
	for m in $order; do
		switch_to "$m"
		for w in strict lax connect; do
			clients=$BENCH_CLIENTS
			[ "$w" != connect ] || clients=1
			for c in $clients; do
				place "$c"
				opts=(-n -M prepared -T "$BENCH_SECONDS" -c "$c" -j "$c")
				[ "$w" != connect ] || opts=(-n -C -T "$BENCH_SECONDS" -c 1 -j 1)
				q "SELECT distkit_flush()" >/dev/null
				before=$(rget "bench.tls.$w")
				"${pin[@]}" pgbench "${opts[@]}" -f "$base/$w.sql" >"$base/$w.$m.$c.$rep.out" 2>&1 || { failed=1; cat "$base/$w.$m.$c.$rep.out" >&2; continue; }
				q "SELECT distkit_flush()" >/dev/null
				after=$(rget "bench.tls.$w")
				f="$base/$w.$m.$c.$rep.out"
				tps=$(awk '/^tps = /{print $3; exit}' "$f")
				avg=$(awk '/^latency average = /{print $4; exit}' "$f")
				n=$(awk -F': *' '/^number of transactions actually processed:/{split($2, a, "/"); print a[1]; exit}' "$f")
				exact=yes
				if [ "$w" != connect ] && [ "$((after - before))" != "$n" ]; then exact=no failed=1; fi
				printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$m" "$w" "$c" "$tps" "$avg" "$n" "$exact" >>"$raw"
				printf 'tls-vs-plain: rep %s %-5s %-7s c=%-2s %9.0f tps  avg %.3f ms  exact: %s\n' "$rep" "$m" "$w" "$c" "$tps" "$avg" "$exact"
			done
		done
	done
done
bench_facts_end

col() { awk -F'\t' -v m="$1" -v w="$2" -v c="$3" -v k="$4" 'NR > 1 && $2 == m && $3 == w && $4 == c { print $k }' "$raw"; }
report="$out/$stamp-tls-vs-plain.md"
{
	echo "# distkit: TLS against plaintext to one Redis, same run — $started"
	echo
	echo "Command (as root): \`$BENCH_COMMAND\`; distkit commit $BENCH_GIT; finished $finished."
	echo "One redis-server with a plaintext and a TLS port (appendonly no), one PostgreSQL; medians of $BENCH_REPS"
	echo "repetitions of \`pgbench -n -M prepared -T $BENCH_SECONDS\`. \"connect\": \`pgbench -C\` (a new session,"
	echo "so a new Redis connection — over TLS a full handshake, RSA 2048 — per call of \`distkit_get\`)."
	echo
	echo "| fact | value |"
	echo "| --- | --- |"
	bench_machine_rows
	echo "| Redis | $("$rctl" cli INFO server | tr -d '\r' | sed -n 's/^redis_version://p'); OpenSSL $(openssl version | cut -d' ' -f2) |"
	echo
	echo "| workload | clients | plaintext tps | TLS tps | TLS / plaintext | plaintext avg ms | TLS avg ms | exact |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
	for w in strict lax connect; do
		clients=$BENCH_CLIENTS
		[ "$w" != connect ] || clients=1
		for c in $clients; do
			p=$(col plain "$w" "$c" 5 | median)
			t=$(col tls "$w" "$c" 5 | median)
			pa=$(col plain "$w" "$c" 6 | median)
			ta=$(col tls "$w" "$c" 6 | median)
			ex=$( (col plain "$w" "$c" 8; col tls "$w" "$c" 8) | sort -u | paste -sd/ -)
			echo "| $w | $c | $(printf '%.0f' "$p") | $(printf '%.0f' "$t") | $(awk -v a="$t" -v b="$p" 'BEGIN { printf "%.2f", a / b }') | $pa | $ta | $ex |"
		done
	done
	echo
	echo "Connection set-up over TLS costs about (1/TLS connect tps − 1/plaintext connect tps) per new session."
} >"$report"
cat "$report"
log "report: $report"
[ "$failed" = 0 ]
