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
# Environment: DISTKIT_REDIS_CTL (default: test/redis-ctl.sh next to this
# script) and whatever it needs (DISTKIT_REDIS_DIR).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ctl=${DISTKIT_REDIS_CTL:-$here/test/redis-ctl.sh}
prefix=${1:?prefix} op=${2:?op} threshold=${3:?dead threshold in ms} max=${4:-16384}
representation=2	# DK_REPRESENTATION in src/instance.c
script=$(cat "$here/lua/instance_registry.lua")
sha=$("$ctl" cli SCRIPT LOAD "$script")	# on every node
r="$prefix:reg:{instances}"
awk -v sha="$sha" -v r="$r" -v op="$op" -v t="$threshold" -v f="$representation" -v m="$max" \
	'NF { printf "EVALSHA %s 6 %s %s:meta %s:num %s:alive %s:free %s:live %s %s %s %s %s -\n",
		sha, r, r, r, r, r, r, op, $1, t, f, m }' |
	"$ctl" cli | grep -c '^DK\|^ERR\|^NOSCRIPT' || true
