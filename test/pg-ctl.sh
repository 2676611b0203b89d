#!/bin/bash
# Starts and stops a throwaway PostgreSQL 15 with distkit preloaded, for the
# demo and the benchmarks (the regression suite uses pg_regress's own).
#   pg-ctl.sh start DIR REDIS_URL [extra postgresql.conf lines…]
#   pg-ctl.sh stop DIR
# The server listens on a free loopback port and a socket in DIR; psql
# settings are written to DIR/env (source it: PGHOST, PGPORT, PGDATABASE).
set -eu
cmd=${1:?usage: pg-ctl.sh start DIR REDIS_URL [conf…] | stop DIR}
dir=${2:?missing DIR}
bindir=$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)

case $cmd in
start)
	url=${3:?missing REDIS_URL}
	shift 3
	rm -rf "$dir"
	mkdir -p "$dir"
	"$bindir/initdb" -D "$dir/data" -U postgres --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1
	for _ in $(seq 1 50); do
		port=$((20000 + RANDOM % 30000))
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
	done
	{
		echo "listen_addresses = '127.0.0.1'"
		echo "port = $port"
		echo "unix_socket_directories = '$dir'"
		echo "shared_preload_libraries = 'distkit'"
		echo "distkit.redis_url = '$url'"
		for line in "$@"; do echo "$line"; done
	} >>"$dir/data/postgresql.conf"
	"$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgresql.log" -w start >/dev/null 9>&-
	printf 'export PGHOST=%s PGPORT=%s PGUSER=postgres PGDATABASE=postgres\n' "$dir" "$port" >"$dir/env"
	;;
stop)
	[ -f "$dir/data/postmaster.pid" ] && "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
	;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
