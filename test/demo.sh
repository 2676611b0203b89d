#!/bin/bash
# The main job, end to end: install and build distkit, start a local
# redis-server and a local PostgreSQL (with distkit preloaded) on free
# loopback ports, and show what distkit does from SQL.  Run as root on a
# fresh Debian bookworm machine (it re-runs itself as the unprivileged user
# "distkit"), or as a user who has already installed distkit.
# Servers are stopped at the end; DISTKIT_DEMO_KEEP=1 leaves them running.
# DISTKIT_INSTALLED=1 runs it against an installed distkit (the Debian
# package postgresql-15-distkit): no build, no build tools, no apt-get;
# as root it only creates the unprivileged user.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DISTKIT_USER=${DISTKIT_USER:-distkit}
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

if [ -n "${DISTKIT_INSTALLED:-}" ]; then
	for f in "$("$PG_CONFIG" --pkglibdir)/distkit.so" "$("$PG_CONFIG" --sharedir)/extension/distkit.control"; do
		[ -f "$f" ] || { echo "demo: DISTKIT_INSTALLED is set but $f is missing" >&2; exit 1; }
	done
fi
if [ "$(id -u)" = 0 ]; then
	if [ -n "${DISTKIT_INSTALLED:-}" ]; then
		id -u "$DISTKIT_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$DISTKIT_USER"
	else
		"$here/test/setup.sh"
	fi
	work=/tmp/distkit-demo-src
	rm -rf "$work" && mkdir -p "$work"
	cp -r "$here/test" "$work/"
	chown -R "$DISTKIT_USER:" "$work"
	# from a directory the user can enter (root's home is not one)
	cd "$work"
	exec runuser -u "$DISTKIT_USER" -- env PATH="$PATH" PG_CONFIG="$PG_CONFIG" \
		DISTKIT_DEMO_KEEP="${DISTKIT_DEMO_KEEP:-}" DISTKIT_INSTALLED="${DISTKIT_INSTALLED:-}" bash "$work/test/demo.sh"
fi

base=/tmp/distkit-demo-$(id -un)
export DISTKIT_REDIS_DIR="$base/redis"
ctl="$here/test/redis-ctl.sh"
stop_all() {
	"$here/test/pg-ctl.sh" stop "$base/pg" || true
	"$ctl" stop || true
}
if [ -z "${DISTKIT_DEMO_KEEP:-}" ]; then trap stop_all EXIT; fi
stop_all 2>/dev/null || true

"$ctl" init "$DISTKIT_REDIS_DIR"
port=$("$ctl" port)
"$here/test/pg-ctl.sh" start "$base/pg" "redis://127.0.0.1:$port/0"
. "$base/pg/env"
echo "redis-server on 127.0.0.1:$port, PostgreSQL on 127.0.0.1:$PGPORT"

psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
\pset footer off
\echo '== CREATE EXTENSION distkit'
CREATE EXTENSION IF NOT EXISTS distkit;
SELECT distkit_clear() AS counters_cleared;

\echo '== Count orders per tenant from a trigger: the counters live in Redis,'
\echo '   shared by every PostgreSQL server that uses the same Redis'
CREATE TABLE orders (id bigserial PRIMARY KEY, tenant text NOT NULL, amount int NOT NULL);
CREATE FUNCTION count_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM distkit_inc('orders:' || NEW.tenant);
	PERFORM distkit_inc('revenue:' || NEW.tenant, NEW.amount);
	RETURN NEW;
END $$;
CREATE TRIGGER orders_count AFTER INSERT ON orders
	FOR EACH ROW EXECUTE FUNCTION count_order();
INSERT INTO orders (tenant, amount)
	SELECT (ARRAY['acme', 'globex', 'initech'])[1 + g % 3], 10 * g
	FROM generate_series(1, 300) g;
SELECT * FROM distkit_get_many(ARRAY['orders:acme', 'orders:globex', 'orders:initech',
                                     'revenue:acme', 'revenue:globex', 'revenue:initech']);

\echo '== Reserve stock atomically across the fleet: only while stock >= 1'
SELECT distkit_set('stock:sku-42', 2) AS stock;
SELECT value AS stock_left, applied AS reserved FROM distkit_inc_if('stock:sku-42', -1, '>=', 1);
SELECT value AS stock_left, applied AS reserved FROM distkit_inc_if('stock:sku-42', -1, '>=', 1);
SELECT value AS stock_left, applied AS reserved FROM distkit_inc_if('stock:sku-42', -1, '>=', 1);

\echo '== Errors are precise: an overflow never changes the stored value'
SELECT distkit_set('big', 9223372036854775807) AS big;
\set ON_ERROR_STOP 0
SELECT distkit_inc('big');
\set ON_ERROR_STOP 1
SELECT distkit_get('big') AS big_unchanged;

\echo '== Lax mode: 50000 page views counted in shared memory, flushed by the worker'
SELECT count(distkit_inc('views:home', 1, 'lax')) AS increments FROM generate_series(1, 50000);
SELECT distkit_get('views:home', 'lax') AS this_server_view;
SELECT distkit_flush() IS NOT NULL AS flushed;
SELECT distkit_get('views:home', 'strict') AS in_redis;
SELECT flushes > 0 AS flusher_ran, pending_delta, strict_fallbacks FROM distkit_stats;

\echo '== Instance-aware: jobs in flight on this server (its slice of a fleet-wide total)'
SELECT * FROM distkit_instance_inc('jobs:running', 3);
SELECT instance_id, alive, is_this_server FROM distkit_instances;

\echo '== Rate limiting (GCRA): 5 requests per minute for one API key'
SELECT g AS request, distkit_rate_allow('api:key-1', 5, '1 minute') AS allowed
FROM generate_series(1, 7) g;

\echo '== Transactional counting: the trigger above, now following COMMIT and ROLLBACK'
ALTER FUNCTION count_order() SET distkit.transactional = on;
BEGIN;
INSERT INTO orders (tenant, amount) SELECT 'acme', 1 FROM generate_series(1, 100);
SELECT distkit_get('orders:acme') AS seen_inside_the_transaction;
ROLLBACK;
SELECT distkit_get('orders:acme') AS after_rollback;
INSERT INTO orders (tenant, amount) SELECT 'acme', 1 FROM generate_series(1, 100);
SELECT distkit_get('orders:acme') AS after_commit;

\echo '== What Redis holds (key = <prefix>:c:{<key>})'
SQL
"$ctl" cli --raw GET 'distkit:c:{orders:acme}' | sed 's/^/distkit:c:{orders:acme} = /'

echo "== Strict round trip cost: 2000 x distkit_inc from one session"
psql -X -q -v ON_ERROR_STOP=1 -c '\timing on' -c "SELECT count(distkit_inc('demo:timing')) FROM generate_series(1, 2000)" | grep -E 'Time|count' || true
if [ -n "${DISTKIT_DEMO_KEEP:-}" ]; then
	echo "Servers left running: . $base/pg/env && psql   (stop: $here/test/pg-ctl.sh stop $base/pg; DISTKIT_REDIS_DIR=$DISTKIT_REDIS_DIR $ctl stop)"
fi
echo "demo: done"
