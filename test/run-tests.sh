#!/bin/bash
# Runs distkit's whole test suite against real servers.
#
# As root (CI, a fresh machine): installs dependencies, builds and installs
# (test/setup.sh), copies the tree to a directory the unprivileged user
# owns and re-runs itself there as that user (PostgreSQL refuses root).
# As any other user: expects distkit installed and runs the suites:
#   1. pg_regress (make installcheck) against a temporary PostgreSQL with
#      shared_preload_libraries = distkit and a redis-server on a free
#      loopback port, then again against a 3-master Redis Cluster, and
#      both again over TLS (modes tls and tls-cluster: rediss:// URLs,
#      certificates of test/certs.sh, distkit.tls_verify = full), all
#      stopped afterwards, also on failure;
#   2. the multi-server and fault tests under test/t (TAP, prove).
# Subsets: DISTKIT_REDIS_MODES="single cluster tls tls-cluster" (default; "" skips
# pg_regress), DISTKIT_REGRESS="01_setup 07_lax" (pg_regress tests),
# DISTKIT_TAP="test/t/009_bad_input.pl" ("" skips TAP),
# DISTKIT_TAP_REDIS_MODE=cluster (TAP files that support it, today
# 009_bad_input, 025_fleet, 027_queue and 029_lax_batch, run against a
# 3-master Redis Cluster).  The whole suite (DISTKIT_TAP unset) runs every
# TAP file in single mode, then DISTKIT_TAP_CLUSTER (default: 025_fleet,
# 027_queue, 029_lax_batch) again against a cluster; "" skips that pass.
# Prints "distkit: N passed, M failed" last and exits non-zero on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DISTKIT_USER=${DISTKIT_USER:-distkit}
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

if [ "$(id -u)" = 0 ]; then
	# one test run at a time per machine: "make install" writes the
	# system-wide extension directory (the lock is held until we exit)
	exec 9>/tmp/distkit-test.lock
	flock 9
	"$here/test/setup.sh"
	work=${DISTKIT_WORKDIR:-/tmp/distkit-test-$(printf '%s' "$here" | md5sum | cut -c1-8)}
	rm -rf "$work"
	mkdir -p "$work"
	(cd "$here" && tar --exclude=./test/tmp --exclude=./results -cf - .) | tar -xf - -C "$work"
	chown -R "$DISTKIT_USER:" "$work"
	cd "$work"	# a directory the user can enter (root's home is not one)
	exec runuser -u "$DISTKIT_USER" -- env PATH="$PATH" CI="${CI:-}" PG_CONFIG="$PG_CONFIG" \
		${DISTKIT_REGRESS+DISTKIT_REGRESS="$DISTKIT_REGRESS"} ${DISTKIT_TAP+DISTKIT_TAP="$DISTKIT_TAP"} \
		${DISTKIT_REDIS_MODES+DISTKIT_REDIS_MODES="$DISTKIT_REDIS_MODES"} \
		${DISTKIT_TAP_REDIS_MODE+DISTKIT_TAP_REDIS_MODE="$DISTKIT_TAP_REDIS_MODE"} \
		${DISTKIT_TAP_CLUSTER+DISTKIT_TAP_CLUSTER="$DISTKIT_TAP_CLUSTER"} \
		bash "$work/test/run-tests.sh" "$@"
fi

cd "$here"
export PATH="$($PG_CONFIG --bindir):$PATH"
tmp="$here/test/tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
export DISTKIT_REDIS_CTL="$here/test/redis-ctl.sh"

cleanup() {
	for d in "$tmp"/*/redis; do
		[ -d "$d" ] && DISTKIT_REDIS_DIR=$d "$DISTKIT_REDIS_CTL" stop >/dev/null 2>&1 || true
	done
}
trap cleanup EXIT INT TERM

passed=0
failed=0

# 0. packaging metadata
if ./test/check-meta.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

# 1. pg_regress, once against one redis-server and once against a Redis
#    Cluster of 3 masters (DISTKIT_REDIS_MODES="single" or "cluster" runs
#    one of them).  Tests that need one server (unix sockets, database
#    numbers) are skipped against the cluster; cluster-only ones against
#    one server.
single_only="05_connection_single"
cluster_only="05_connection_cluster"
run_regress() {
	local mode=$1 rtmp="$tmp/$1" all tests skip rc n_ok n_bad port ports url topo=$1 tls="" tlsconf=""
	mkdir -p "$rtmp"
	export DISTKIT_REDIS_DIR="$rtmp/redis"
	echo "== pg_regress against Redis ($mode) =="
	case $mode in
	tls) topo=single tls=1 ;;
	tls-cluster) topo=cluster tls=1 ;;
	esac
	DISTKIT_REDIS_MODE=$topo DISTKIT_REDIS_TLS=$tls "$DISTKIT_REDIS_CTL" init "$DISTKIT_REDIS_DIR"
	[ -n "$tls" ] && tlsconf="distkit.tls_ca_file = '$("$DISTKIT_REDIS_CTL" certs)/ca.crt'"
	port=$("$DISTKIT_REDIS_CTL" port)
	ports=$("$DISTKIT_REDIS_CTL" ports)
	export DISTKIT_REDIS_PORT=$port DISTKIT_REDIS_PORTS=$ports
	export DISTKIT_REDIS_SOCK=$("$DISTKIT_REDIS_CTL" sock)
	url=$("$DISTKIT_REDIS_CTL" url)
	export DISTKIT_REDIS_URL_TEMPLATE="${url%%://*}://%s${url#*://}"
	if [ "$topo" = cluster ]; then skip=$single_only; else skip=$cluster_only; fi
	cat >"$rtmp/postgresql.conf" <<CONF
shared_preload_libraries = 'distkit'
distkit.redis_url = '$(printf "$DISTKIT_REDIS_URL_TEMPLATE" '')'
log_min_messages = info
log_statement = 'all'
distkit.heartbeat_interval = '200ms'
$tlsconf
CONF
	# DISTKIT_REGRESS="01_setup 07_lax" runs a subset (01_setup is always needed)
	all=${DISTKIT_REGRESS:-$(ls sql/*.sql | sed 's#sql/\(.*\)\.sql#\1#' | grep -vx distkit | sort)}
	tests=$(for t in $all; do case " $skip " in *" $t "*) ;; *) echo "$t" ;; esac; done | tr '\n' ' ')
	rm -f regression.diffs
	set +e
	make -s installcheck PG_CONFIG="$PG_CONFIG" DISTKIT_TMP="$rtmp" REGRESS="$tests" 2>&1 | tee "$rtmp/regress.out"
	rc=${PIPESTATUS[0]}
	set -e
	n_ok=$(grep -cE '\.\.\. ok|     ok  ' "$rtmp/regress.out" || true)
	n_bad=$(grep -cE '\.\.\. FAILED|     FAILED  ' "$rtmp/regress.out" || true)
	passed=$((passed + n_ok))
	failed=$((failed + n_bad))
	if [ "$rc" != 0 ] && [ "$n_bad" = 0 ]; then failed=$((failed + 1)); fi
	if [ -f regression.diffs ]; then cat regression.diffs; mv regression.diffs "$rtmp/"; fi

	# secrets must never reach the server log (the tests use passwords that
	# start with s3cret or secretpw); and the redaction must have happened
	if grep -nE "s3cret|secretpw" log/postmaster.log; then
		echo "FAILED: a test password appears in the PostgreSQL log ($mode)"
		failed=$((failed + 1))
	elif [[ " $tests " == *" 06_auth "* ]] &&
		! { grep -qE 'parameter "distkit.redis_url" changed to "redis[a-z-]*://alice:\*\*\*@' log/postmaster.log &&
			grep -qE 'statement: ALTER SYSTEM SET distkit.redis_url = .redis[a-z-]*://:\*\*\*@' log/postmaster.log; }; then
		echo "FAILED: ALTER SYSTEM SET distkit.redis_url and its reload were not logged (redacted) as expected ($mode)"
		failed=$((failed + 1))
	else
		echo "ok: no password in the server log ($mode)"
		passed=$((passed + 1))
	fi
	cp log/postmaster.log "$rtmp/postmaster.log" 2>/dev/null || true
	"$DISTKIT_REDIS_CTL" stop
}
for mode in ${DISTKIT_REDIS_MODES-single cluster tls tls-cluster}; do
	run_regress "$mode"
done

# 2. TAP tests (multi-server, faults); DISTKIT_TAP="test/t/001_x.pl ..." runs a subset
run_tap() {	# run_tap <label> <files...>: prove them, add up the counts
	local label=$1
	shift
	mkdir -p "$tmp/tap-$label"
	set +e
	TESTDIR="$tmp/tap-$label" PERL5LIB="$pgxs/src/test/perl" PG_REGRESS="$pgxs/src/test/regress/pg_regress" \
		prove -v "$@" 2>&1 | tee "$tmp/tap-$label.out"
	trc=${PIPESTATUS[0]}
	set -e
	t_ok=$(grep -cE '^ok [0-9]+' "$tmp/tap-$label.out" || true)
	t_bad=$(grep -cE '^not ok [0-9]+' "$tmp/tap-$label.out" || true)
	passed=$((passed + t_ok))
	failed=$((failed + t_bad))
	if [ "$trc" != 0 ] && [ "$t_bad" = 0 ]; then failed=$((failed + 1)); fi
}
pgxs=$($PG_CONFIG --pgxs | sed 's#/src/makefiles/pgxs.mk##')
tap_tests=${DISTKIT_TAP-$(ls test/t/*.pl 2>/dev/null)}
if [ -n "$tap_tests" ]; then
	# shellcheck disable=SC2086
	run_tap main $tap_tests
fi
# the whole suite runs the TAP files that support a cluster once more against one
if [ -z "${DISTKIT_TAP+x}" ] && [ -z "${DISTKIT_TAP_REDIS_MODE:-}" ]; then
	cluster_tap=${DISTKIT_TAP_CLUSTER-test/t/025_fleet.pl test/t/027_queue.pl test/t/029_lax_batch.pl}
	if [ -n "$cluster_tap" ]; then
		echo "== TAP against a 3-master Redis Cluster: $cluster_tap"
		# shellcheck disable=SC2086
		DISTKIT_TAP_REDIS_MODE=cluster run_tap cluster $cluster_tap
	fi
fi

echo "distkit: $passed passed, $failed failed"
[ "$failed" = 0 ]
