#!/bin/bash
# Controls the Redis servers of a distkit test run (loopback only).
# State lives in $DISTKIT_REDIS_DIR (mode, ports, configs, pid files).
#   redis-ctl.sh init DIR   pick free loopback ports (20000-32767), write the
#                           configs, start, check that each server answering
#                           is ours (INFO process_id), else retry elsewhere
#   redis-ctl.sh start|stop|kill|pause|resume|ping   (every data node)
#   redis-ctl.sh cli ARGS…  run redis-cli against it (prints the raw reply)
#   redis-ctl.sh port|ports|masters|sentinels|sock|pidfile|pidfiles|conf|confs|url|mode
#   redis-ctl.sh delkeys PATTERN      delete the keys matching PATTERN on
#                                     every master; prints how many
#   redis-ctl.sh node-cli PORT ARGS…   redis-cli against one node
#   redis-ctl.sh sentinel-cli ARGS…    redis-cli against the first sentinel
#   redis-ctl.sh master-port           the current master (sentinel mode)
#   redis-ctl.sh certs                 the test certificates' directory (TLS)
# The mode is chosen at init by DISTKIT_REDIS_MODE:
#   single   (default) one redis-server with a unix socket too;
#   cluster  a Redis Cluster of 3 masters (DISTKIT_REDIS_REPLICAS=1 adds a
#            replica to each), created with redis-cli --cluster create;
#   sentinel one master, one replica and three sentinels watching it under
#            the name "distkit".
# DISTKIT_REDIS_TLS at init makes every server (and sentinel, and the
# cluster bus and replication) speak TLS only on its TCP port (the unix
# socket stays plaintext), with the certificates of test/certs.sh:
#   1       TLS, clients need no certificate;
#   mutual  TLS, clients must present a certificate signed by the test CA.
# DISTKIT_TLS_CERTS at init: the certificates' directory (made if missing;
# several set-ups may share one CA), else DIR/certs.
# Then `url` prints rediss:// URLs and redis-cli is run with --tls.
# In cluster mode `cli` follows redirections (redis-cli -c); KEYS, CLIENT,
# DBSIZE and INFO run on every master (outputs concatenated) and ACL, CONFIG,
# FLUSHDB, FLUSHALL and SCRIPT on every node (first output printed).  In
# sentinel mode `cli` talks to the current master.
set -eu
cmd=${1:?usage: redis-ctl.sh init DIR | start | stop | kill | pause | resume | ping | cli ARGS | port | ports | sock | url}
if [ "$cmd" = init ]; then
	DISTKIT_REDIS_DIR=${2:?init needs a directory}
	mkdir -p "$DISTKIT_REDIS_DIR"
fi
dir=${DISTKIT_REDIS_DIR:?DISTKIT_REDIS_DIR is not set}

mode() { cat "$dir/mode" 2>/dev/null || echo single; }
tls() { cat "$dir/tls" 2>/dev/null || true; }			# "", 1 or mutual
# the certificates: DISTKIT_TLS_CERTS at init (shared by several set-ups), else DIR/certs
certs=$(cat "$dir/certsdir" 2>/dev/null || echo "$dir/certs")
data_ports() { cat "$dir/ports"; }			# masters first, then replicas
master_ports() { cat "$dir/masters"; }
sentinel_ports() { cat "$dir/sentinels" 2>/dev/null || true; }
ndir() { echo "$dir/n$1"; }

pid_of() { cat "$(ndir "$1")/redis.pid" 2>/dev/null || true; }
# running, and not a zombie waiting for a slow init to reap it
running() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
tls_cli_args() {
	[ -n "$(tls)" ] || return 0
	# --insecure: tests switch the server to expired or wrong-host certificates
	echo "--tls --insecure --cacert $certs/ca.crt --cert $certs/client.crt --key $certs/client.key"
}
# shellcheck disable=SC2046
node_cli() { local p=$1; shift; redis-cli -h 127.0.0.1 -p "$p" $(tls_cli_args) --no-auth-warning "$@"; }

# A free loopback port, not yet taken by this run (cluster bus ports
# included).  Below Linux's ephemeral ports (32768-60999), where a client
# connection may hold the port, and PostgreSQL's test ports (49152+).
free_port() {
	local port
	for _ in $(seq 1 100); do
		port=$((20000 + RANDOM % 12768))
		# free if nothing answers and nothing listens there
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
			! grep -qx "$port" "$dir/allports" 2>/dev/null; then
			echo "$port" >>"$dir/allports"
			echo "$port"
			return 0
		fi
	done
	echo "no free port" >&2
	return 1
}

# The redis-server (or sentinel) answering on port $1 is the one whose pid
# file is in its node directory: another test run may have taken the port
# between free_port and our bind, and its server must not be mistaken for
# ours (nor be shut down by us).
ours() {
	local p=$1 pid
	pid=$(pid_of "$p")
	[ -n "$pid" ] && running "$pid" &&
		[ "$(node_cli "$p" INFO server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$pid" ]
}

start_node() {
	local p=$1 pid d
	d=$(ndir "$p")
	pid=$(pid_of "$p")
	if [ -n "$pid" ] && running "$pid"; then return 0; fi
	rm -f "$d/redis.pid"
	if [ -f "$d/sentinel.conf" ]; then
		redis-server "$d/sentinel.conf" --sentinel >/dev/null 9>&-	# do not inherit the test lock
	else
		redis-server "$d/redis.conf" >/dev/null 9>&-
	fi
	for _ in $(seq 1 100); do
		# ours must be alive: if it could not bind, another run's server
		# may be answering on the port
		pid=$(pid_of "$p")
		if [ -n "$pid" ] && running "$pid"; then
			# a password set by a test (requirepass, ACL): the pid is ours
			if node_cli "$p" PING 2>&1 | grep -q NOAUTH; then return 0; fi
			if [ "$(node_cli "$p" PING 2>/dev/null)" = PONG ]; then
				ours "$p" && return 0
				echo "another redis-server answers on port $p" >&2
				return 1
			fi
		elif [ -s "$d/redis.log" ] && grep -q "Could not create server TCP\|Address already in use\|Failed listening on port" "$d/redis.log"; then
			echo "redis-server could not bind port $p" >&2
			return 1
		fi
		sleep 0.05
	done
	echo "redis-server on port $p did not start; see $d/redis.log" >&2
	return 1
}

stop_node() {
	local p=$1 pid
	pid=$(pid_of "$p")
	[ -n "$pid" ] || return 0
	kill -CONT "$pid" 2>/dev/null || true
	# SHUTDOWN is immediate; SIGTERM takes ~1.5 s in cluster mode.  Only
	# to our own server (see ours).
	# shellcheck disable=SC2046
	if ours "$p"; then timeout 2 redis-cli -h 127.0.0.1 -p "$p" $(tls_cli_args) SHUTDOWN >/dev/null 2>&1 || true; fi
	running "$pid" && kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do running "$pid" || { rm -f "$(ndir "$p")/redis.pid"; return 0; }; sleep 0.05; done
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$(ndir "$p")/redis.pid"
}

# init: a new node on a fresh free port, started and checked to be ours;
# if another run takes the port first, try another one (5 attempts).
# $1: data | cluster | replica (of port $2) | sentinel (of master port $2).
# Prints the port.
new_node() {
	local kind=$1 of=${2:-} p bp d attempt
	for attempt in 1 2 3 4 5; do
		p=$(free_port) || return 1
		d=$(ndir "$p")
		rm -rf "$d"
		mkdir -p "$d"
		case $kind in
		data) write_conf "$p" ;;
		cluster)
			# the bus port from the same range (not port + 10000, which may
			# be an ephemeral port)
			bp=$(free_port) || return 1
			write_conf "$p"
			cat >>"$d/redis.conf" <<CONF
cluster-enabled yes
cluster-port $bp
cluster-config-file nodes.conf
cluster-node-timeout 3000
cluster-require-full-coverage yes
CONF
			;;
		replica)
			write_conf "$p"
			echo "replicaof 127.0.0.1 $of" >>"$d/redis.conf"
			;;
		sentinel)
			cat >"$d/sentinel.conf" <<CONF
bind 127.0.0.1
port $p
daemonize yes
pidfile $d/redis.pid
logfile $d/redis.log
dir $d
sentinel monitor distkit 127.0.0.1 $of 2
sentinel down-after-milliseconds distkit 2000
sentinel failover-timeout distkit 10000
sentinel parallel-syncs distkit 1
CONF
			tls_conf "$p" >>"$d/sentinel.conf"
			;;
		esac
		if start_node "$p"; then echo "$p"; return 0; fi
		stop_node "$p"
		echo "retrying on another port (attempt $attempt)" >&2
	done
	return 1
}

write_conf() {
	local p=$1 d
	d=$(ndir "$p")
	mkdir -p "$d"
	cat >"$d/redis.conf" <<CONF
bind 127.0.0.1
port $p
unixsocket $d/redis.sock
unixsocketperm 700
daemonize yes
pidfile $d/redis.pid
logfile $d/redis.log
dir $d
save ""
appendonly yes
appendfsync always
CONF
	tls_conf "$p" >>"$d/redis.conf"
}

# TLS only on port $1 (DISTKIT_REDIS_TLS at init), for clients, replication
# and the cluster bus; the unix socket stays plaintext
tls_conf() {
	[ -n "$(tls)" ] || return 0
	cat <<CONF
port 0
tls-port $1
tls-cert-file $certs/server.crt
tls-key-file $certs/server.key
tls-ca-cert-file $certs/ca.crt
tls-auth-clients $([ "$(tls)" = mutual ] && echo yes || echo no)
tls-replication yes
tls-cluster yes
CONF
}

# every node of the cluster reports cluster_state:ok and sees every master
wait_cluster_ok() {
	local nmasters ok
	nmasters=$(master_ports | wc -l)
	for _ in $(seq 1 400); do
		ok=1
		for p in $(data_ports); do
			node_cli "$p" CLUSTER INFO 2>/dev/null | grep -q '^cluster_state:ok' || { ok=0; break; }
			[ "$(node_cli "$p" CLUSTER SLOTS 2>/dev/null | grep -c .)" -gt 0 ] || { ok=0; break; }
		done
		if [ "$ok" = 1 ] && [ "$(node_cli "$(master_ports | head -1)" --raw CLUSTER SHARDS 2>/dev/null | grep -c '^master$')" -ge "$nmasters" ]; then
			return 0
		fi
		sleep 0.05
	done
	echo "the Redis Cluster in $dir did not reach cluster_state:ok" >&2
	return 1
}

start_all() {
	for p in $(data_ports); do start_node "$p"; done
	if [ "$(mode)" = cluster ]; then wait_cluster_ok; fi
	for p in $(sentinel_ports); do start_node "$p"; done
}

stop_all() {
	for p in $(sentinel_ports); do stop_node "$p"; done
	for p in $(data_ports); do stop_node "$p"; done
}

# the master's port as the first sentinel sees it (sentinel mode)
current_master() {
	local s
	for s in $(sentinel_ports); do
		if node_cli "$s" SENTINEL get-master-addr-by-name distkit 2>/dev/null | sed -n 2p | grep -q .; then
			node_cli "$s" SENTINEL get-master-addr-by-name distkit | sed -n 2p
			return 0
		fi
	done
	head -1 "$dir/ports"
}

cli() {
	local opts=() m
	m=$(mode)
	if [ "$m" = single ]; then node_cli "$(head -1 "$dir/ports")" "$@"; return; fi
	if [ "$m" = sentinel ]; then node_cli "$(current_master)" "$@"; return; fi
	while [ $# -gt 0 ]; do
		case $1 in
		-a | -n | --user | --pass) opts+=("$1" "$2"); shift 2 ;;
		-*) opts+=("$1"); shift ;;
		*) break ;;
		esac
	done
	case ${1^^} in
	KEYS)
		# one list; a master without matches would print an empty line
		for p in $(master_ports); do node_cli "$p" "${opts[@]}" "$@"; done | sed '/^$/d'
		;;
	CLIENT | DBSIZE | INFO)
		for p in $(master_ports); do node_cli "$p" "${opts[@]}" "$@"; done
		;;
	ACL | CONFIG | FLUSHDB | FLUSHALL | SCRIPT)
		local first=1 out input
		# -x (last argument from stdin): every node gets the same bytes
		input=$(mktemp)
		case " ${opts[*]} " in *" -x "*) cat >"$input" ;; esac
		for p in $(data_ports); do
			out=$(node_cli "$p" "${opts[@]}" "$@" <"$input")
			if [ "$first" = 1 ]; then printf '%s\n' "$out"; first=0; fi
		done
		rm -f "$input"
		;;
	*)
		node_cli "$(master_ports | head -1)" -c "${opts[@]}" "$@"
		;;
	esac
}

case $cmd in
init)
	m=${DISTKIT_REDIS_MODE:-single}
	rm -f "$dir/allports"
	echo "$m" >"$dir/mode"
	case ${DISTKIT_REDIS_TLS:-} in
	"") rm -f "$dir/tls" "$dir/certsdir" ;;
	1 | mutual)
		echo "$DISTKIT_REDIS_TLS" >"$dir/tls"
		certs=${DISTKIT_TLS_CERTS:-$dir/certs}
		echo "$certs" >"$dir/certsdir"
		"$(dirname "$0")/certs.sh" "$certs"
		;;
	*) echo "DISTKIT_REDIS_TLS must be 1 or mutual" >&2; exit 2 ;;
	esac
	case $m in
	single)
		p=$(new_node data)
		echo "$p" >"$dir/ports"
		echo "$p" >"$dir/masters"
		;;
	cluster)
		: >"$dir/ports"
		: >"$dir/masters"
		nrep=${DISTKIT_REDIS_REPLICAS:-0}
		for _ in $(seq 1 $((3 * (1 + nrep)))); do
			new_node cluster >>"$dir/ports"
		done
		head -3 "$dir/ports" >"$dir/masters"
		hosts=$(for p in $(data_ports); do printf '127.0.0.1:%s ' "$p"; done)
		# shellcheck disable=SC2086
		redis-cli $(tls_cli_args) --cluster create $hosts --cluster-replicas "$nrep" --cluster-yes >"$dir/create.log" 2>&1 9>&- ||
			{ cat "$dir/create.log" >&2; exit 1; }
		# redis-cli pairs masters and replicas itself: record who is master
		wait_cluster_ok
		for p in $(data_ports); do
			node_cli "$p" ROLE | head -1 | grep -qx master && echo "$p"
		done >"$dir/masters"
		{ cat "$dir/masters"; for p in $(data_ports); do grep -qx "$p" "$dir/masters" || echo "$p"; done; } >"$dir/ports.tmp"
		mv "$dir/ports.tmp" "$dir/ports"
		wait_cluster_ok
		# replicas in sync with their masters
		for p in $(data_ports); do
			grep -qx "$p" "$dir/masters" && continue
			for _ in $(seq 1 200); do
				node_cli "$p" INFO replication | grep -q 'master_link_status:up' && break
				sleep 0.05
			done
		done
		;;
	sentinel)
		mp=$(new_node data)
		echo "$mp" >"$dir/ports"
		echo "$mp" >"$dir/masters"
		rp=$(new_node replica "$mp")
		echo "$rp" >>"$dir/ports"
		# the replica is in sync before the sentinels start
		for _ in $(seq 1 200); do
			node_cli "$rp" INFO replication | grep -q 'master_link_status:up' && break
			sleep 0.05
		done
		: >"$dir/sentinels"
		for _ in 1 2 3; do
			new_node sentinel "$mp" >>"$dir/sentinels"
		done
		# every sentinel knows the replica and the other sentinels
		for _ in $(seq 1 400); do
			ok=1
			for s in $(sentinel_ports); do
				node_cli "$s" SENTINEL master distkit | grep -A1 -x 'num-slaves' | tail -1 | grep -qx 1 || ok=0
				node_cli "$s" SENTINEL master distkit | grep -A1 -x 'num-other-sentinels' | tail -1 | grep -qx 2 || ok=0
			done
			[ "$ok" = 1 ] && break
			sleep 0.05
		done
		;;
	*) echo "unknown DISTKIT_REDIS_MODE $m" >&2; exit 2 ;;
	esac
	;;
start) start_all ;;
stop) stop_all ;;
kill)
	for p in $(data_ports); do
		pid=$(pid_of "$p")
		[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
		rm -f "$(ndir "$p")/redis.pid"
	done
	sleep 0.1
	;;
pause) for p in $(data_ports); do kill -STOP "$(pid_of "$p")"; done ;;
resume) for p in $(data_ports); do kill -CONT "$(pid_of "$p")"; done ;;
ping) cli PING ;;
cli) shift; cli "$@" ;;
delkeys)
	# one key per DEL: the keys may lie in different cluster slots
	n=0
	while read -r k; do
		[ -n "$k" ] || continue
		[ "$(cli --raw DEL "$k" </dev/null)" = 1 ] && n=$((n + 1))
	done < <(cli --raw KEYS "${2:?delkeys needs a pattern}")
	echo "$n"
	;;
node-cli) shift; p=$1; shift; node_cli "$p" "$@" ;;
sentinel-cli) shift; node_cli "$(sentinel_ports | head -1)" "$@" ;;
master-port) current_master ;;
mode) mode ;;
port) head -1 "$dir/ports" ;;
ports) data_ports | paste -sd, - ;;
masters) master_ports | paste -sd, - ;;
sentinels) sentinel_ports | paste -sd, - ;;
url)
	s=redis
	[ -n "$(tls)" ] && s=rediss
	case $(mode) in
	single) echo "$s://127.0.0.1:$(head -1 "$dir/ports")/0" ;;
	cluster) echo "$s-cluster://$(master_ports | sed 's/^/127.0.0.1:/' | paste -sd, -)" ;;
	sentinel) echo "$s-sentinel://$(sentinel_ports | sed 's/^/127.0.0.1:/' | paste -sd, -)#distkit" ;;
	esac
	;;
certs) echo "$certs" ;;
sock) echo "$(ndir "$(head -1 "$dir/ports")")/redis.sock" ;;
pidfile) echo "$(ndir "$(head -1 "$dir/ports")")/redis.pid" ;;
conf) echo "$(ndir "$(head -1 "$dir/ports")")/redis.conf" ;;
confs) for p in $(data_ports); do echo "$(ndir "$p")/redis.conf"; done ;;
pidfiles) for p in $(data_ports); do echo "$(ndir "$p")/redis.pid"; done ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
