-- Set-up shared by the regression tests: the extension and a helper that
-- turns an error into one line "SQLSTATE message | hint", with the test
-- Redis ports replaced by PORT so that expected output is stable.  The
-- suite runs against one redis-server and again against a Redis Cluster
-- (test/run-tests.sh, which also sets DISTKIT_REDIS_URL_TEMPLATE: the URL
-- of either with %s where "user:password@" goes).
CREATE EXTENSION distkit;
\getenv redis_port DISTKIT_REDIS_PORT
\getenv redis_ports DISTKIT_REDIS_PORTS
\set ECHO none
SELECT format('CREATE FUNCTION dk_port() RETURNS text LANGUAGE sql IMMUTABLE AS %L',
              'SELECT ' || quote_literal(:'redis_port')) \gexec
SELECT format('CREATE FUNCTION dk_ports() RETURNS text[] LANGUAGE sql IMMUTABLE AS %L',
              'SELECT string_to_array(' || quote_literal(:'redis_ports') || ', '','')') \gexec
\set ECHO all

CREATE FUNCTION dk_error(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text; hint text; res text; p text;
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	res := st || ' ' || msg || coalesce(' | detail: ' || nullif(det, ''), '')
		|| coalesce(' | hint: ' || nullif(hint, ''), '');
	FOREACH p IN ARRAY dk_ports() LOOP
		res := replace(res, p, 'PORT');
	END LOOP;
	RETURN res;
END $$;

-- Start from an empty key space.
SELECT distkit_clear() >= 0 AS cleared;
SELECT extversion FROM pg_extension WHERE extname = 'distkit';
