#!/bin/bash
# distkit: the transactional outbox (issue 18), in one run:
#  0. distkit_queue_send against a strict distkit_inc, 1 and 8 clients;
#  1. cost: distkit_outbox_send in a committed transaction against an INSERT
#     of the same payload into an ordinary table of the same shape, at 1 and
#     8 clients, interleaved repetitions (median tps and the ratio), with
#     synchronous_commit on (the default: the commit's WAL flush counts)
#     and off (the CPU cost shows);
#  2. shipping while 8 clients produce for BENCH_SECONDS (one message per
#     transaction, then ten): messages produced
#     and shipped per second, backlog left, end-to-end lag (commit -> entry
#     in the stream: the entry id's Redis time minus clock_timestamp() taken
#     by the sending statement, same machine clock) p50 / p99 / max;
#  3. a backlog: BENCH_BACKLOG rows committed while Redis is stopped, then
#     Redis started: the time to drain them (messages/s), exactness checked
#     (the stream holds each row once).
# Writes bench/results/<stamp>-outbox.md.
#
# As root (Debian bookworm), like bench/run.sh: takes the machine lock
# (/tmp/distkit-test.lock), runs test/setup.sh (apt, user "distkit", build,
# install), then re-runs itself as that user in a copy of the tree.
#
# Settings (environment): BENCH_SECONDS (one pgbench run, default 8),
# BENCH_REPS (default 3), BENCH_BACKLOG (default 200000), BENCH_RESULTS.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DISTKIT_USER=${DISTKIT_USER:-distkit}
. "$here/bench/lib.sh"
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BENCH_SECONDS=${BENCH_SECONDS:-8}
BENCH_REPS=${BENCH_REPS:-3}
BENCH_BACKLOG=${BENCH_BACKLOG:-200000}
export BENCH_SECONDS BENCH_REPS BENCH_BACKLOG

if [ "$(id -u)" = 0 ]; then
	bench_lock outbox
	"$here/test/setup.sh"
	bench_run_as_user outbox distkit-outbox-src outbox.sh
fi

bench_user_lock
export PATH="$("$PG_CONFIG" --bindir):$PATH"
out=${BENCH_RESULTS:-$here/bench/results}
mkdir -p "$out"
base=$(mktemp -d /tmp/distkit-outbox-XXXXXX)
export DISTKIT_REDIS_DIR="$base/redis"
rctl="$here/test/redis-ctl.sh"
stop_all() {
	"$here/test/pg-ctl.sh" stop "$base/pg" >/dev/null 2>&1 || true
	[ ! -f "$DISTKIT_REDIS_DIR/ports" ] || "$rctl" stop >/dev/null 2>&1 || true
	rm -rf "$base"
}
trap stop_all EXIT
log() { echo "outbox: $*"; }
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 -c "$1"; }

"$rctl" init "$DISTKIT_REDIS_DIR" >/dev/null 9>&-
rport=$("$rctl" port)
rcli() { redis-cli -p "$rport" "$@"; }
"$here/test/pg-ctl.sh" start "$base/pg" "redis://127.0.0.1:$rport/0" 9>&-
. "$base/pg/env"
q "CREATE EXTENSION distkit"
q "CREATE TABLE plain_outbox (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, queue text NOT NULL,
     payload jsonb NOT NULL, created timestamptz NOT NULL DEFAULT now())"
payload='{"order": 42, "amount": 1999, "tenant": "acme", "items": [1, 2, 3]}'
echo "INSERT INTO plain_outbox (queue, payload) VALUES ('bench', '$payload');" >"$base/insert.sql"
echo "SELECT distkit_outbox_send('bench', '$payload');" >"$base/outbox.sql"
echo "SELECT distkit_inc('bench.c');" >"$base/inc.sql"
echo "SELECT distkit_queue_send('bench.q', '$payload');" >"$base/send.sql"
echo "SELECT distkit_outbox_send('lag', jsonb_build_object('t', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint));" >"$base/lag.sql"
# 10 messages per transaction (a trigger on a 10-row INSERT does the same)
echo "SELECT count(distkit_outbox_send('lag10', jsonb_build_object('t', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint))) FROM generate_series(1, 10);" >"$base/lag10.sql"
tps() { pgbench -n -M prepared -T "$BENCH_SECONDS" -c "$1" -j "$1" -f "$2" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
# wait until the outbox is empty (at most 300 s); logs how long it took
drain() {
	local left t0 t1
	left=$(q 'SELECT count(*) FROM distkit_outbox')
	t0=$(date +%s.%N)
	for _ in $(seq 1 3000); do
		if [ "$(q 'SELECT count(*) FROM distkit_outbox')" = 0 ]; then
			t1=$(date +%s.%N)
			[ "$left" = 0 ] || log "drained $left rows in $(echo "$t1 - $t0" | bc -l | cut -c1-6) s"
			return 0
		fi
		sleep 0.1
	done
	log "the outbox did not drain in 300 s: $(q 'SELECT count(*) FROM distkit_outbox') of $left rows left"
	return 1
}

# 1. cost against a plain INSERT
declare -A runs
for sc in on off; do
	q "ALTER SYSTEM SET synchronous_commit = $sc" && q "SELECT pg_reload_conf()" >/dev/null
	for rep in $(seq 1 "$BENCH_REPS"); do
		for c in 1 8; do
			for w in insert outbox; do
				t=$(tps "$c" "$base/$w.sql") || t=
				runs[$sc.$c.$w]="${runs[$sc.$c.$w]:-} $t"
				log "synchronous_commit=$sc clients=$c $w rep $rep: $t tps"
				drain || true
			done
		done
	done
done
q "ALTER SYSTEM RESET synchronous_commit" && q "SELECT pg_reload_conf()" >/dev/null
# 0. distkit_queue_send against a strict distkit_inc (one script round trip each)
for rep in $(seq 1 "$BENCH_REPS"); do
	for c in 1 8; do
		for w in inc send; do
			t=$(tps "$c" "$base/$w.sql") || t=
			runs[redis.$c.$w]="${runs[redis.$c.$w]:-} $t"
			log "clients=$c $w rep $rep: $t tps"
		done
	done
done
[ "$(rcli XLEN 'distkit:q:{bench}')" = "$(q "SELECT last_value FROM distkit_outbox_id_seq")" ] && exact1=yes || exact1=NO

# 2. shipping during 8-client production, and the lag: one message per
# transaction (lag), then ten (lag10)
pct() { awk -v p="$1" -v n="$lagn" 'NR == int(n * p / 100 + 0.999999) { printf "%.1f", $1 / 1000 }' "$base/lag.us"; }
declare -A ship
for w in lag lag10; do
	rcli DEL "distkit:q:{$w}" >/dev/null
	start=$(date +%s.%N)
	tx=$(pgbench -n -M prepared -T "$BENCH_SECONDS" -c 8 -j 8 -f "$base/$w.sql" 2>/dev/null | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
	end=$(date +%s.%N)
	produced=$tx
	[ "$w" = lag ] || produced=$((tx * 10))
	shipped_during=$(rcli XLEN "distkit:q:{$w}")
	backlog_end=$(q "SELECT count(*) FROM distkit_outbox")
	drain
	rcli --raw XRANGE "distkit:q:{$w}" - + | awk '/^[0-9]+-[0-9]+$/ { split($1, a, "-"); id = a[1] } /^\{"t": / { gsub(/[^0-9]/, "", $0); print id * 1000 - $0 }' \
		| sort -n >"$base/lag.us"
	lagn=$(wc -l <"$base/lag.us")
	dur=$(echo "$end - $start" | bc -l)
	ship[$w]="$produced produced ($(echo "scale=0; $produced / $dur" | bc -l)/s in $tx transactions), $shipped_during shipped by the end ($(echo "scale=0; $shipped_during / $dur" | bc -l)/s), backlog at the end $backlog_end; lag commit -> stream: p50 $(pct 50) ms, p99 $(pct 99) ms, max $(tail -1 "$base/lag.us" | awk '{ printf "%.1f", $1 / 1000 }') ms ($lagn messages; each once: $([ "$lagn" = "$produced" ] && echo yes || echo NO))"
done

# 3. a backlog built while Redis is down, then drained
"$rctl" stop >/dev/null
q "INSERT INTO distkit_outbox (queue, payload) SELECT 'backlog', jsonb_build_object('i', i) FROM generate_series(1, $BENCH_BACKLOG) i" 2>/dev/null ||
	q "SELECT count(distkit_outbox_send('backlog', jsonb_build_object('i', i))) FROM generate_series(1, $BENCH_BACKLOG) i" >/dev/null
bl_view=$(q "SELECT messages FROM distkit_outbox_backlog WHERE queue = 'backlog'")
"$rctl" start >/dev/null 9>&-
# from the first entry shipped (the shipper may be in its back-off)
for _ in $(seq 1 1000); do [ "$(rcli XLEN 'distkit:q:{backlog}')" -gt 0 ] && break; sleep 0.01; done
t0=$(date +%s.%N)
drain
t1=$(date +%s.%N)
drain_s=$(echo "$t1 - $t0" | bc -l)
bl_len=$(rcli XLEN 'distkit:q:{backlog}')
exact3=$([ "$bl_len" = "$BENCH_BACKLOG" ] && echo yes || echo NO)

med() { tr ' ' '\n' <<<"$1" | grep . | median; }
stamp=$(date -u +%Y%m%dT%H%MZ)
report="$out/$stamp-outbox.md"
{
	echo "# outbox benchmark $stamp"
	echo
	echo "Command: \`bench/outbox.sh\` (BENCH_SECONDS=$BENCH_SECONDS, BENCH_REPS=$BENCH_REPS, BENCH_BACKLOG=$BENCH_BACKLOG); $(nproc) CPUs, $(uptime | sed 's/.*load/load/')"
	echo
	echo "| synchronous_commit | clients | INSERT tps (median) | distkit_outbox_send tps (median) | cost ratio (INSERT tps / send tps; target <= 1.5) |"
	echo "| --- | --- | --- | --- | --- |"
	for sc in on off; do
		for c in 1 8; do
			i=$(med "${runs[$sc.$c.insert]}") o=$(med "${runs[$sc.$c.outbox]}")
			echo "| $sc | $c | $i | $o | $(echo "scale=2; $i / $o" | bc -l) |"
		done
	done
	echo
	echo "| clients | strict distkit_inc tps | distkit_queue_send tps | send / inc (target >= 0.9) |"
	echo "| --- | --- | --- | --- |"
	for c in 1 8; do
		i=$(med "${runs[redis.$c.inc]}") o=$(med "${runs[redis.$c.send]}")
		echo "| $c | $i | $o | $(echo "scale=2; $o / $i" | bc -l) |"
	done
	echo
	echo "Runs (tps):"
	for k in $(printf '%s\n' "${!runs[@]}" | sort); do echo "- $k:${runs[$k]}"; done
	echo
	echo "Every message of part 1 in the stream once: $exact1."
	echo
	echo "Shipping during ${BENCH_SECONDS} s of 8 producing clients, one message per transaction: ${ship[lag]}."
	echo
	echo "Shipping during ${BENCH_SECONDS} s of 8 producing clients, ten messages per transaction: ${ship[lag10]}."
	echo
	echo "Backlog: $BENCH_BACKLOG rows committed with Redis stopped (view: $bl_view), drained in $(printf '%.2f' "$drain_s") s = $(echo "scale=0; $BENCH_BACKLOG / $drain_s" | bc -l) messages/s; stream length $bl_len (each once: $exact3)."
} >"$report"
cat "$report"
