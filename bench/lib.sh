# bench/lib.sh — what bench/run.sh and bench/cluster-vs-single.sh share
# (sourced; both set "here" to the source tree and DISTKIT_USER first).

# The median of the numbers on standard input ("-" when there are none).
median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# As root: one distkit run at a time per machine (shared with
# test/run-tests.sh): "make install" writes the system-wide extension
# directory, and other runs would skew the figures.  $1 names the caller.
bench_lock() {
	exec 9>/tmp/distkit-test.lock
	if ! flock -n 9; then
		echo "$1: waiting for the machine lock /tmp/distkit-test.lock (another test or benchmark runs)"
		flock 9
	fi
}

# As the user: take the lock unless the root part of the run holds it.
bench_user_lock() {
	[ -z "${BENCH_LOCKED:-}" ] || return 0
	if [ -e /tmp/distkit-test.lock ]; then exec 9</tmp/distkit-test.lock; else exec 9>/tmp/distkit-test.lock; fi
	flock 9
}

# As root: run bench/$3 as $DISTKIT_USER in a copy of bench/, test/ and lua/
# (/tmp/$2-<hash of the tree>), with every exported BENCH_* setting, then
# copy its results back to BENCH_RESULTS (default bench/results) and exit
# with its status.  $1 names the caller in messages.
bench_run_as_user() {
	local label=$1 prefix=$2 script=$3 work out v rc=0
	local -a settings=()

	work=${BENCH_WORKDIR:-/tmp/$prefix-$(printf '%s' "$here" | md5sum | cut -c1-8)}
	rm -rf "$work"
	mkdir -p "$work/results"
	(cd "$here" && tar --exclude=./bench/results -cf - bench test lua) | tar -xf - -C "$work"
	chown -R "$DISTKIT_USER:" "$work"
	for v in $(compgen -e | grep '^BENCH_'); do settings+=("$v=${!v}"); done
	runuser -u "$DISTKIT_USER" -- env PATH="$PATH" PG_CONFIG="$PG_CONFIG" "${settings[@]}" \
		BENCH_LOCKED=1 BENCH_RESULTS="$work/results" bash "$work/bench/$script" || rc=$?
	out=${BENCH_RESULTS:-$here/bench/results}
	mkdir -p "$out"
	if ls "$work/results/"* >/dev/null 2>&1; then
		cp -r "$work/results/"* "$out/"
		echo "$label: results copied to $out: $(cd "$work/results" && ls | tr '\n' ' ')"
	fi
	exit "$rc"
}
