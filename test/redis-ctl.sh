#!/bin/bash
# Controls the redis-server of a distkit test run (loopback only).
# State lives in $DISTKIT_REDIS_DIR (port, pid file, config, socket).
#   redis-ctl.sh init DIR   pick a free loopback port, write the config, start
#   redis-ctl.sh start|stop|kill|pause|resume|ping
#   redis-ctl.sh cli ARGS…  run redis-cli against it (prints the raw reply)
#   redis-ctl.sh port|sock|pidfile
set -eu
cmd=${1:?usage: redis-ctl.sh init DIR | start | stop | kill | pause | resume | ping | cli ARGS | port | sock}
if [ "$cmd" = init ]; then
	DISTKIT_REDIS_DIR=${2:?init needs a directory}
	mkdir -p "$DISTKIT_REDIS_DIR"
fi
dir=${DISTKIT_REDIS_DIR:?DISTKIT_REDIS_DIR is not set}

pid() { cat "$dir/redis.pid" 2>/dev/null || true; }
alive() { local p; p=$(pid); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
cli() { redis-cli -h 127.0.0.1 -p "$(cat "$dir/port")" --no-auth-warning "$@"; }

start() {
	alive && return 0
	rm -f "$dir/redis.pid"
	redis-server "$dir/redis.conf" >/dev/null 9>&-	# do not inherit the test lock
	for _ in $(seq 1 100); do
		# ours must be alive: if it could not bind, another run's server
		# may be answering on the port
		if alive; then
			if cli PING 2>&1 | grep -q NOAUTH; then return 0; fi
			if [ "$(cli PING 2>/dev/null)" = PONG ]; then
				[ "$(cli INFO server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$(pid)" ] && return 0
				echo "another redis-server answers on port $(cat "$dir/port")" >&2
				return 1
			fi
		elif [ -s "$dir/redis.log" ] && grep -q "Could not create server TCP\|Address already in use" "$dir/redis.log"; then
			echo "redis-server could not bind port $(cat "$dir/port")" >&2
			return 1
		fi
		sleep 0.05
	done
	echo "redis-server did not start; see $dir/redis.log" >&2
	return 1
}

stop() {
	local p; p=$(pid)
	[ -n "$p" ] || return 0
	kill -CONT "$p" 2>/dev/null || true
	kill -TERM "$p" 2>/dev/null || true
	for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || { rm -f "$dir/redis.pid"; return 0; }; sleep 0.05; done
	kill -KILL "$p" 2>/dev/null || true
	rm -f "$dir/redis.pid"
}

case $cmd in
init)
	# pick a free port; if another run takes it first, try another one
	for attempt in 1 2 3 4 5; do
		for _ in $(seq 1 50); do
			# below Linux's ephemeral ports (32768-60999), where a client
			# connection may hold the port, and PostgreSQL's test ports (49152+)
			port=$((20000 + RANDOM % 12768))
			# free if nothing answers and nothing listens there
			if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
		done
		echo "$port" >"$dir/port"
		rm -f "$dir/redis.log"
		cat >"$dir/redis.conf" <<CONF
bind 127.0.0.1
port $port
unixsocket $dir/redis.sock
unixsocketperm 700
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly yes
appendfsync always
CONF
		if start; then exit 0; fi
		stop
		[ "$attempt" = 5 ] && exit 1
	done
	;;
start) start ;;
stop) stop ;;
kill) p=$(pid); [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; rm -f "$dir/redis.pid"; sleep 0.1 ;;
pause) kill -STOP "$(pid)" ;;
resume) kill -CONT "$(pid)" ;;
ping) cli PING ;;
cli) shift; cli "$@" ;;
port) cat "$dir/port" ;;
sock) echo "$dir/redis.sock" ;;
pidfile) echo "$dir/redis.pid" ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
