#!/bin/bash
# fake-instance.sh — simulated distkit instances in the registry, for the
# fleet tests (test/t/025_fleet.pl, sql/16_instance.sql) and bench/fleet.sh.
#
# Each id read from stdin (one per line) runs lua/instance_registry.lua's
# op exactly as a server's worker does (beat: heartbeat, a number on the
# first beat, back into the live set after a pause; leave: out of the live
# set), so the registry holds what a fleet of that many servers would
# write.  All ids go through one redis-cli (test/redis-ctl.sh cli), so a
# few thousand take well under a second.  Prints how many replies were
# errors (0 when all went well).
#
# Usage: fake-instance.sh PREFIX beat|leave DEAD_THRESHOLD_MS [MAX_INSTANCES] < ids
#        fake-instance.sh PREFIX slice ID KEY VALUE [COUNTER_PREFIX]
# slice: writes instance ID's slice of instance-aware counter KEY (the
# counter's current epoch) as lua/instance.lua would, and drops the
# counter's cached sum (L) so that the next call recomputes it.  The
# counter is under COUNTER_PREFIX (a session's distkit.prefix; default
# PREFIX), the instance in the registry of PREFIX (the worker's).
# Environment: DISTKIT_REDIS_CTL (default: test/redis-ctl.sh next to this
# script) and whatever it needs (DISTKIT_REDIS_DIR).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ctl=${DISTKIT_REDIS_CTL:-$here/test/redis-ctl.sh}
prefix=${1:?prefix} op=${2:?op} threshold=${3:?dead threshold in ms} max=${4:-16384}
representation=3	# DK_REPRESENTATION in src/instance.c
if [ "$op" = slice ]; then
	id=$3 key=$4 value=$5 cprefix=${6:-$prefix}
	ns=$("$ctl" cli HGET "$prefix:reg:{instances}:num" "$id")
	[ -n "$ns" ] || { echo "fake-instance.sh: $id has no number" >&2; exit 1; }
	n=${ns%%:*} serial=${ns#*:}
	c="$cprefix:i:{$key}"
	epoch=$("$ctl" cli HGET "$c" E)
	now=$("$ctl" cli TIME | head -1)000	# Redis time in ms (to the second)
	"$ctl" cli HSET "$c" "v:$n" "$value" "s:$n" "$serial" "e:$n" "${epoch:-0}" "t:$n" "$now" >/dev/null
	"$ctl" cli HDEL "$c" L >/dev/null
	echo 0
	exit 0
fi
script=$(cat "$here/lua/instance_registry.lua")
sha=$("$ctl" cli SCRIPT LOAD "$script")	# on every node
r="$prefix:reg:{instances}"
awk -v sha="$sha" -v r="$r" -v op="$op" -v t="$threshold" -v f="$representation" -v m="$max" \
	'NF { printf "EVALSHA %s 6 %s %s:meta %s:num %s:alive %s:free %s:live %s %s %s %s %s -\n",
		sha, r, r, r, r, r, r, op, $1, t, f, m }' |
	"$ctl" node-cli "$("$ctl" masters | cut -d, -f1)" -c | grep -c '^DK\|^ERR\|^NOSCRIPT' || true
