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
	# from a directory the user can enter (root's home is not one)
	(cd "$work" && runuser -u "$DISTKIT_USER" -- env PATH="$PATH" PG_CONFIG="$PG_CONFIG" "${settings[@]}" \
		BENCH_LOCKED=1 BENCH_RESULTS="$work/results" bash "$work/bench/$script") || rc=$?
	out=${BENCH_RESULTS:-$here/bench/results}
	mkdir -p "$out"
	if ls "$work/results/"* >/dev/null 2>&1; then
		cp -r "$work/results/"* "$out/"
		echo "$label: results copied to $out: $(cd "$work/results" && ls | tr '\n' ' ')"
	fi
	exit "$rc"
}

# A header directive of workload script $1 (-- $2: value), from $wdir.
directive() { sed -n "s/^-- $2: *//p" "$wdir/$1.sql"; }

# Total and steal jiffies of all CPUs.
cpu_stat() { awk '/^cpu /{t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $9; exit}' /proc/stat; }

# Machine facts around a run: bench_facts_begin sets started, stamp,
# load_before; bench_facts_end sets finished, load_after, steal (percent of
# CPU time stolen meanwhile), cpu_model, virt; bench_machine_rows prints the
# report's rows about the machine.
bench_facts_begin() {
	started=$(date -u '+%Y-%m-%d %H:%M UTC')
	stamp=$(date -u '+%Y%m%dT%H%M%SZ')
	load_before=$(cut -d' ' -f1-3 /proc/loadavg)
	read -r cpu_t0 steal_t0 < <(cpu_stat)
}
bench_facts_end() {
	read -r cpu_t1 steal_t1 < <(cpu_stat)
	steal=$(awk -v a="$cpu_t0" -v b="$cpu_t1" -v s="$steal_t0" -v t="$steal_t1" 'BEGIN { printf "%.1f", (b > a) ? 100 * (t - s) / (b - a) : 0 }')
	load_after=$(cut -d' ' -f1-3 /proc/loadavg)
	finished=$(date -u '+%Y-%m-%d %H:%M UTC')
	cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
	virt=$(systemd-detect-virt 2>/dev/null || true)
}
bench_machine_rows() {
	echo "| CPUs (nproc) | $(nproc) |"
	echo "| CPU model | ${cpu_model:-unknown} |"
	echo "| virtualisation | ${virt:-unknown} |"
	echo "| memory | $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) |"
	echo "| kernel | $(uname -sr) |"
	echo "| load average before / after | $load_before / $load_after |"
	echo "| CPU steal during the run | $steal % |"
}
