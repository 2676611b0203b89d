-- Queues on Redis Streams and the transactional outbox: send, read by a
-- group, acknowledge, pending, reclaim after the visibility timeout, dead
-- letters, the entry format, bad input; outbox rows shipped once at commit,
-- never on rollback (savepoints included), and the backlog view.

--
-- immediate sends, the entry format
--
SELECT distkit_queue_send('q:jobs', '{"n": 1}') ~ '^[0-9]+-[0-9]+$' AS id_format;
SELECT distkit_queue_send('q:jobs', '{"n": 2}') IS NOT NULL AS sent;
SELECT distkit_queue_length('q:jobs');
\set raw `"$DISTKIT_REDIS_CTL" cli XRANGE 'distkit:q:{q:jobs}' - + COUNT 1 | head -3 | tail -2 | tr '\n' ' '`
SELECT :'raw' AS first_fields;
\set raw `"$DISTKIT_REDIS_CTL" cli XRANGE 'distkit:q:{q:jobs}' - + COUNT 1 | sed -n 4,5p | tr '\n' ' '`
SELECT :'raw' ~ '^origin [0-9]+:[0-9]+ $' AS origin_field;

--
-- a group: created on first use, reads from the start; ack; pending
--
SELECT payload, deliveries FROM distkit_queue_read('q:jobs', 'g1', 'c1', 10);
SELECT payload FROM distkit_queue_read('q:jobs', 'g1', 'c2', 10);
SELECT consumer, pending, oldest < '10 seconds' AS recent FROM distkit_queue_pending('q:jobs', 'g1');
SELECT count(*) FILTER (WHERE distkit_queue_ack('q:jobs', 'g1', id)) AS acked
  FROM (SELECT distkit_queue_send('q:jobs', '{"n": 3}') AS x) s,
       distkit_queue_read('q:jobs', 'g1', 'c1', 10);
SELECT consumer, pending FROM distkit_queue_pending('q:jobs', 'g1') ORDER BY 1;
-- another group sees every message
SELECT count(*) FROM distkit_queue_read('q:jobs', 'g2', 'c1', 10);
-- a group that does not exist has nothing pending
SELECT count(*) FROM distkit_queue_pending('q:jobs', 'nobody');

--
-- visibility: c1 took n=1 and n=2 without acknowledging them; after the
-- visibility timeout another consumer gets them again
--
SELECT count(*) FROM distkit_queue_read('q:jobs', 'g1', 'c2', 10, '1 hour');
SELECT pg_sleep(0.3);
SELECT payload, deliveries FROM distkit_queue_read('q:jobs', 'g1', 'c2', 10, '200 ms') ORDER BY id;
SELECT distkit_queue_ack('q:jobs', 'g1', id) FROM distkit_queue_read('q:jobs', 'g1', 'c2', 10, '1 hour');

--
-- a poison message ends in the dead-letter stream after the maximum deliveries
--
SET distkit.queue_max_deliveries = 2;
SELECT distkit_queue_send('q:poison', '{"bad": true}') IS NOT NULL AS sent;
SELECT deliveries FROM distkit_queue_read('q:poison', 'g', 'a', 1, '100 ms');
SELECT pg_sleep(0.15);
SELECT deliveries FROM distkit_queue_read('q:poison', 'g', 'b', 1, '100 ms');
SELECT pg_sleep(0.15);
SELECT count(*) AS delivered_again FROM distkit_queue_read('q:poison', 'g', 'c', 1, '100 ms');
\set raw `"$DISTKIT_REDIS_CTL" cli XLEN 'distkit:qd:{q:poison}'`
SELECT :'raw' AS dead_letters;
\set raw `"$DISTKIT_REDIS_CTL" cli XRANGE 'distkit:qd:{q:poison}' - + | sed -n 3p`
SELECT :'raw' AS dead_payload;
SELECT count(*) FROM distkit_queue_pending('q:poison', 'g');
RESET distkit.queue_max_deliveries;

--
-- the bound on the stream's length (MAXLEN ~)
--
SET distkit.queue_max_length = 100;
SELECT count(distkit_queue_send('q:bounded', jsonb_build_object('i', i))) FROM generate_series(1, 1000) i;
SELECT distkit_queue_length('q:bounded') BETWEEN 100 AND 300 AS bounded;
RESET distkit.queue_max_length;

--
-- bad input
--
SELECT dk_error($$SELECT distkit_queue_send(NULL, '{}')$$);
SELECT dk_error($$SELECT distkit_queue_send('q', NULL)$$);
SELECT dk_error($$SELECT distkit_queue_send('', '{}')$$);
SELECT dk_error($$SELECT distkit_queue_send(repeat('x', 1025), '{}')$$);
SELECT dk_error($$SELECT distkit_queue_send('q:big', jsonb_build_object('s', repeat('x', 600000)))$$);
SELECT dk_error($$SELECT distkit_outbox_send('q:big', jsonb_build_object('s', repeat('x', 600000)))$$);
SELECT dk_error($$SELECT distkit_outbox_send(NULL, '{}')$$);
SELECT dk_error($$SELECT distkit_outbox_send('', '{}')$$);
SELECT dk_error($$SELECT * FROM distkit_queue_read('q:jobs', '', 'c')$$);
SELECT dk_error($$SELECT * FROM distkit_queue_read('q:jobs', repeat('g', 256), 'c')$$);
SELECT dk_error($$SELECT * FROM distkit_queue_read('q:jobs', 'g', NULL)$$);
SELECT dk_error($$SELECT * FROM distkit_queue_read('q:jobs', 'g', 'c', 0)$$);
SELECT dk_error($$SELECT * FROM distkit_queue_read('q:jobs', 'g', 'c', 1, '0 s')$$);
SELECT dk_error($$SELECT distkit_queue_ack('q:jobs', 'g1', 'not-an-id')$$);
SELECT distkit_cache_set_text('q:wrongtype', 'x');
\set raw `"$DISTKIT_REDIS_CTL" cli SET 'distkit:q:{q:wrongtype}' x`
SELECT dk_error($$SELECT distkit_queue_send('q:wrongtype', '{}')$$);

--
-- the outbox: committed rows ship once, rolled back ones never
--
CREATE TABLE orders (id int PRIMARY KEY, amount int);
CREATE FUNCTION orders_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM distkit_outbox_send('q:orders', jsonb_build_object('order', NEW.id));
	RETURN NEW;
END $$;
CREATE TRIGGER orders_event AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_event();
BEGIN;
INSERT INTO orders SELECT i, i FROM generate_series(1, 100) i;
ROLLBACK;
BEGIN;
INSERT INTO orders SELECT i, i FROM generate_series(1, 50) i;
SAVEPOINT s;
INSERT INTO orders SELECT i, i FROM generate_series(51, 60) i;
ROLLBACK TO s;
COMMIT;
DO $$
BEGIN
	INSERT INTO orders VALUES (61, 1);
	INSERT INTO orders VALUES (1, 1);	-- duplicate key: the block's work is undone
EXCEPTION WHEN unique_violation THEN
	NULL;
END $$;
INSERT INTO orders VALUES (62, 1);
-- wait for the shipper (at most 30 s)
DO $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		EXIT WHEN distkit_queue_length('q:orders') >= 51
			AND NOT EXISTS (SELECT 1 FROM distkit_outbox);
		PERFORM pg_sleep(0.1);
	END LOOP;
END $$;
SELECT distkit_queue_length('q:orders');
SELECT count(*) AS left_in_outbox FROM distkit_outbox;
SELECT count(*) AS backlog_rows FROM distkit_outbox_backlog;
SELECT count(*), count(DISTINCT payload), min((payload->>'order')::int), max((payload->>'order')::int)
  FROM distkit_queue_read('q:orders', 'g', 'c', 1000);
\set raw `"$DISTKIT_REDIS_CTL" cli XRANGE 'distkit:q:{q:orders}' - + COUNT 1 | sed -n 6,7p | head -1`
SELECT :'raw' AS outbox_id_field;
SELECT backend_type FROM pg_stat_activity WHERE backend_type = 'distkit outbox shipper' AND datname = current_database();
DROP TABLE orders;
DROP FUNCTION orders_event();
