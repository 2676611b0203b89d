-- Set-up shared by the regression tests: the extension and a helper that
-- turns an error into one line "SQLSTATE message | hint", with the test
-- Redis port replaced by PORT so that expected output is stable.
CREATE EXTENSION distkit;
\getenv redis_port DISTKIT_REDIS_PORT
\set ECHO none
SELECT format('CREATE FUNCTION dk_port() RETURNS text LANGUAGE sql IMMUTABLE AS %L',
              'SELECT ' || quote_literal(:'redis_port')) \gexec
\set ECHO all

CREATE FUNCTION dk_error(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text; hint text;
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	RETURN replace(st || ' ' || msg || coalesce(' | detail: ' || nullif(det, ''), '')
		|| coalesce(' | hint: ' || nullif(hint, ''), ''),
		dk_port(), 'PORT');
END $$;

-- Start from an empty key space.
SELECT distkit_clear() >= 0 AS cleared;
SELECT extversion FROM pg_extension WHERE extname = 'distkit';
