#!/bin/bash
# bench/lax-flush.sh — Redis's side of a lax flush of 100,000 keys, old
# (bench/lax_flush_per_key.lua: one EVALSHA and one hash record per key)
# against new (lua/lax_flush.lua: one EVALSHA per group of keys, one record
# per instance and group), in the same run on the same Redis:
#   - Redis CPU per flushed key: INFO cpu (used_cpu_sys + used_cpu_user)
#     before and after pipelining (redis-cli --pipe) the calls a flusher
#     would send, divided by the keys flushed;
#   - Redis memory: INFO memory used_memory after FLUSHALL and after the
#     100,000 counters are written with the same values by (a) strict
#     increments (INCRBY, what counter_inc.lua leaves), (b) the old flush,
#     (c) the new flush; the ratios lax / strict.
# The key names are distkit's (<prefix>:c:{key}, <prefix>:cf:...).  Runs
# anywhere test/redis-ctl.sh runs (any user; no PostgreSQL needed).
# Usage: bench/lax-flush.sh [keys per new call ...]   (default "1 10 100 1000")
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
rctl=$here/test/redis-ctl.sh
export DISTKIT_REDIS_DIR=$(mktemp -d /tmp/distkit-laxflush.XXXXXX)
trap '"$rctl" stop >/dev/null 2>&1 || true; rm -rf "$DISTKIT_REDIS_DIR"' EXIT
"$rctl" init "$DISTKIT_REDIS_DIR" >/dev/null
cli() { "$rctl" cli "$@"; }
N=${BENCH_KEYS:-100000}
sizes=${*:-1 10 100 1000}
old_sha=$(cli SCRIPT LOAD "$(cat "$here/bench/lax_flush_per_key.lua")")
new_sha=$(cli SCRIPT LOAD "$("$here/src/embed-lua.sh" expand "$here/lua/lax_flush.lua")")
iold_sha=$(cli SCRIPT LOAD "$(cat "$here/bench/instance_flush_per_key.lua")")
inew_sha=$(cli SCRIPT LOAD "$("$here/src/embed-lua.sh" expand "$here/lua/instance_flush.lua")")
inst=4e4bfcff-49cc-4be7-9471-5102c3e70451
cpu_us() { cli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { t += $2 } END { printf "%.0f", t * 1e6 }'; }
mem() { cli INFO memory | tr -d '\r' | awk -F: '/^used_memory:/ { print $2 }'; }
# RESP for one command from its arguments
resp() { perl -e 'print "*" . scalar(@ARGV) . "\r\n"; print "\$" . length($_) . "\r\n$_\r\n" for @ARGV' "$@"; }
# the old flush: one EVALSHA per key (seq $1), delta = key number % 7 + 1
old_cmds() {
	perl -e 'my ($sha, $n, $seq, $inst) = @ARGV;
	for my $i (1 .. $n) {
		my @a = ("EVALSHA", $sha, 2, "distkit:c:{bench.k$i}", "distkit:cf:{bench.k$i}", $inst, $seq, $i % 7 + 1, 604800000);
		print "*" . scalar(@a) . "\r\n"; print "\$" . length($_) . "\r\n$_\r\n" for @a;
	}' "$old_sha" "$N" "$1" "$inst"
}
# the new flush: one EVALSHA per group of $2 keys (parts of one batch $1)
new_cmds() {
	perl -e 'my ($sha, $n, $seq, $inst, $size) = @ARGV; my $part = 0;
	for (my $s = 1; $s <= $n; $s += $size) {
		my $e = $s + $size - 1; $e = $n if $e > $n;
		# one record per group: a group of $size keys stands for one hash slot
		my $rec = $size >= $n / 10 ? "distkit:cf:{g0}:$inst" : "distkit:cf:{g" . int($s / $size) . "}:$inst";
		my $p = $size >= $n / 10 ? $part++ : 0;
		my @a = ("EVALSHA", $sha, 1 + $e - $s + 1, $rec, map({ "distkit:c:{bench.k$_}" } $s .. $e), $seq, $p, 604800000, map({ $_ % 7 + 1 } $s .. $e));
		print "*" . scalar(@a) . "\r\n"; print "\$" . length($_) . "\r\n$_\r\n" for @a;
	}' "$new_sha" "$N" "$1" "$inst" "$2"
}
# instance-aware, old: one EVALSHA of instance.lua op flush per key, record <prefix>:if:{key}
# (instance number 0, serial 1, live-set version 1, live)
iold_cmds() {
	perl -e 'my ($sha, $n, $seq) = @ARGV;
	for my $i (1 .. $n) {
		my @a = ("EVALSHA", $sha, 2, "distkit:i:{bench.k$i}", "distkit:if:{bench.k$i}", "flush", 0, 1, $i % 7 + 1, $seq, 1, 1);
		print "*" . scalar(@a) . "\r\n"; print "\$" . length($_) . "\r\n$_\r\n" for @a;
	}' "$iold_sha" "$N" "$1"
}
# instance-aware, new: one EVALSHA of instance_flush.lua per $2 keys, one record
inew_cmds() {
	perl -e 'my ($sha, $n, $seq, $inst, $size) = @ARGV; my $part = 0;
	for (my $s = 1; $s <= $n; $s += $size) {
		my $e = $s + $size - 1; $e = $n if $e > $n;
		my @a = ("EVALSHA", $sha, 1 + $e - $s + 1, "distkit:cf:{g0}:$inst", map({ "distkit:i:{bench.k$_}" } $s .. $e),
			$seq, $part++, 604800000, 0, 1, 1, 1, "", map({ $_ % 7 + 1 } $s .. $e));
		print "*" . scalar(@a) . "\r\n"; print "\$" . length($_) . "\r\n$_\r\n" for @a;
	}' "$inew_sha" "$N" "$1" "$inst" "$2"
}
strict_cmds() {
	perl -e 'my ($n) = @ARGV; for my $i (1 .. $n) { my @a = ("INCRBY", "distkit:c:{bench.k$i}", $i % 7 + 1);
		print "*" . scalar(@a) . "\r\n"; print "\$" . length($_) . "\r\n$_\r\n" for @a; }' "$N"
}
run() {	# $1 label; commands on stdin; prints "label calls cpu_us"
	local before after f
	f=$(mktemp)
	cat >"$f"
	before=$(cpu_us)
	"$rctl" cli --pipe <"$f" >/dev/null
	after=$(cpu_us)
	rm -f "$f"
	echo "$((after - before))"
}
echo "# $N keys, Redis $(cli INFO server | tr -d '\r' | awk -F: '/^redis_version:/ { print $2 }'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "| flush | keys per EVALSHA | Redis CPU µs per key (first batch) | (second batch, all keys again) | ratio to old |"
echo "| --- | ---: | ---: | ---: | ---: |"
cli FLUSHALL >/dev/null
o1=$(old_cmds 1 | run old); o2=$(old_cmds 2 | run old)
old_us=$(awk -v a="$o1" -v b="$o2" -v n="$N" 'BEGIN { printf "%.2f", (a + b) / 2 / n }')
printf '| old (per key) | 1 | %.2f | %.2f | 1.00 |\n' "$(awk -v a="$o1" -v n="$N" 'BEGIN { print a / n }')" "$(awk -v a="$o2" -v n="$N" 'BEGIN { print a / n }')"
for s in $sizes; do
	cli FLUSHALL >/dev/null
	n1=$(new_cmds 1 "$s" | run new); n2=$(new_cmds 2 "$s" | run new)
	printf '| new (grouped) | %s | %.2f | %.2f | %.2f |\n' "$s" "$(awk -v a="$n1" -v n="$N" 'BEGIN { print a / n }')" \
		"$(awk -v a="$n2" -v n="$N" 'BEGIN { print a / n }')" "$(awk -v a="$n1" -v b="$n2" -v o="$old_us" -v n="$N" 'BEGIN { printf "%.2f", (a + b) / 2 / n / o }')"
done
echo
echo "| $N counters written by | used_memory delta (bytes) | bytes per counter | ratio to strict |"
echo "| --- | ---: | ---: | ---: |"
cli FLUSHALL >/dev/null; m0=$(mem); strict_cmds | run strict >/dev/null; ms=$(( $(mem) - m0 ))
printf '| strict increments | %d | %.1f | 1.00 |\n' "$ms" "$(awk -v a="$ms" -v n="$N" 'BEGIN { print a / n }')"
cli FLUSHALL >/dev/null; m0=$(mem); old_cmds 1 | run old >/dev/null; mo=$(( $(mem) - m0 ))
printf '| old lax flush (record per counter) | %d | %.1f | %.2f |\n' "$mo" "$(awk -v a="$mo" -v n="$N" 'BEGIN { print a / n }')" "$(awk -v a="$mo" -v b="$ms" 'BEGIN { print a / b }')"
for s in $sizes; do
	cli FLUSHALL >/dev/null; m0=$(mem); new_cmds 1 "$s" | run new >/dev/null; mn=$(( $(mem) - m0 ))
	printf '| new lax flush, %s keys per call (%s records) | %d | %.1f | %.2f |\n' "$s" "$( [ "$s" -ge $((N / 10)) ] && echo 1 || echo $(( (N + s - 1) / s )) )" "$mn" \
		"$(awk -v a="$mn" -v n="$N" 'BEGIN { print a / n }')" "$(awk -v a="$mn" -v b="$ms" 'BEGIN { print a / b }')"
done
echo
echo "Instance-aware counters (per-server slices in a hash), one server's slices:"
echo
echo "| flush | keys per EVALSHA | Redis CPU µs per key (first batch) | (second batch) | ratio to old | used_memory delta per counter (bytes) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
cli FLUSHALL >/dev/null; m0=$(mem)
i1=$(iold_cmds 1 | run iold); mi=$(( $(mem) - m0 )); i2=$(iold_cmds 2 | run iold)
iold_us=$(awk -v a="$i1" -v b="$i2" -v n="$N" 'BEGIN { printf "%.4f", (a + b) / 2 / n }')
printf '| old (per key, record per counter) | 1 | %.2f | %.2f | 1.00 | %.1f |\n' "$(awk -v a="$i1" -v n="$N" 'BEGIN { print a / n }')" \
	"$(awk -v a="$i2" -v n="$N" 'BEGIN { print a / n }')" "$(awk -v a="$mi" -v n="$N" 'BEGIN { print a / n }')"
for s in $sizes; do
	[ "$s" -ge 100 ] || continue
	cli FLUSHALL >/dev/null; m0=$(mem)
	j1=$(inew_cmds 1 "$s" | run inew); mj=$(( $(mem) - m0 )); j2=$(inew_cmds 2 "$s" | run inew)
	printf '| new (grouped, one record) | %s | %.2f | %.2f | %.2f | %.1f |\n' "$s" "$(awk -v a="$j1" -v n="$N" 'BEGIN { print a / n }')" \
		"$(awk -v a="$j2" -v n="$N" 'BEGIN { print a / n }')" "$(awk -v a="$j1" -v b="$j2" -v o="$iold_us" -v n="$N" 'BEGIN { printf "%.2f", (a + b) / 2 / n / o }')" \
		"$(awk -v a="$mj" -v n="$N" 'BEGIN { print a / n }')"
done
# exactness: every counter holds 2 * (i % 7 + 1) in slice v:0
bad=$(cli EVAL "local bad = 0 for i = 1, tonumber(ARGV[1]) do if tonumber(redis.call('HGET', 'distkit:i:{bench.k' .. i .. '}', 'v:0')) ~= 2 * (i % 7 + 1) then bad = bad + 1 end end return bad" 0 "$N")
echo
echo "Exactness check after the last run: $bad of $N instance-aware counters differ from the deltas sent."
