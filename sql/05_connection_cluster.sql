-- Redis Cluster only (not run against one redis-server): keys spread over
-- the masters, the keys of one counter share a slot, a plain redis:// URL
-- naming one cluster node, and clearing across every master.
SELECT distkit_clear() >= 0 AS cleared;
SELECT count(distkit_inc('spread:' || g)) FROM generate_series(1, 300) g;
SELECT count(distkit_inc('spread:' || g, 1, 'lax')) FROM generate_series(1, 300) g;
SELECT distkit_flush() >= 0 AS flushed;
SELECT sum(distkit_get('spread:' || g)) FROM generate_series(1, 300) g;
-- every master holds some of the 300 counters (KEYS runs on each master)
\set raw `for p in $("$DISTKIT_REDIS_CTL" masters | tr , ' '); do "$DISTKIT_REDIS_CTL" node-cli "$p" --raw KEYS 'distkit:c:{spread:*' | grep -c .; done | awk '$1 > 0 { n++ } END { print n }'`
SELECT :'raw' AS masters_holding_counters;
\set raw `for p in $("$DISTKIT_REDIS_CTL" masters | tr , ' '); do "$DISTKIT_REDIS_CTL" node-cli "$p" --raw KEYS 'distkit:c:{spread:*'; done | grep -c .`
SELECT :'raw' AS counters_in_redis;
-- a lax counter's slot holds the flush's exactly-once record of its group
-- (one per instance and slot: <prefix>:cf:{<slot tag>}:<instance id>)
\set raw `s=$("$DISTKIT_REDIS_CTL" cli CLUSTER KEYSLOT 'distkit:c:{spread:7}'); for p in $("$DISTKIT_REDIS_CTL" masters | tr , ' '); do "$DISTKIT_REDIS_CTL" node-cli "$p" --raw CLUSTER GETKEYSINSLOT "$s" 1000; done | grep -c '^distkit:cf:{g[0-9]*}:'`
SELECT :'raw'::int >= 1 AS same_slot;
-- a plain redis:// URL naming one node of the cluster: a clear error for
-- the keys of other nodes (some of 20 keys are elsewhere); the first seed
-- of the suite's URL, rediss:// in the TLS pass
\set url `printf "$DISTKIT_REDIS_URL_TEMPLATE" '' | sed 's#^\(rediss*\)-cluster://\([^,]*\),.*#\1://\2/0#'`
ALTER SYSTEM SET distkit.redis_url = :'url';
SELECT pg_reload_conf() AS reloaded \gset
\c
CREATE FUNCTION dk_first_error() RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
	FOR g IN 1..20 LOOP
		r := dk_error(format('SELECT distkit_get(%L)', 'spread:' || g));
		IF r <> 'no error' THEN RETURN regexp_replace(r, 'MOVED [0-9]+', 'MOVED N'); END IF;
	END LOOP;
	RETURN 'no error';
END $$;
SELECT dk_first_error();
DROP FUNCTION dk_first_error();
ALTER SYSTEM RESET distkit.redis_url;
SELECT pg_reload_conf() AS reloaded \gset
\c
-- scripts are loaded per node: after SCRIPT FLUSH on every node, a call
-- touching every master (NOSCRIPT on each) and the flusher load them again
\set raw `"$DISTKIT_REDIS_CTL" cli SCRIPT FLUSH`
SELECT sum(value) FROM distkit_get_many(ARRAY(SELECT 'spread:' || g FROM generate_series(1, 300) g));
SELECT count(distkit_inc('spread:' || g, 1, 'lax')) FROM generate_series(1, 300) g;
SELECT distkit_flush() >= 1 AS flushed;
SELECT sum(distkit_get('spread:' || g)) FROM generate_series(1, 300) g;
-- clear reaches every master
SELECT distkit_clear();
\set raw `"$DISTKIT_REDIS_CTL" cli --raw KEYS 'distkit:c:*' | grep -c .`
SELECT :'raw' AS keys_left;
