-- title: lax distkit_inc, 100k keys, warm
-- measures: lax_inc_100k with every key already in the buffer: its setup touches each of the 100000 keys twice in one session (delta 0; the first pass cold: one first-touch read per key, the second warm: the report shows both passes' times), before any run, so the runs pay no first-touch (seeding) read; set distkit.lax_capacity to at least 200000 when lax_inc_100k runs too (both key sets then fit).  The difference to lax_inc_100k's first repetition is the first-touch cost.
-- requires: SELECT distkit_inc('bench.probe', 0, 'lax')
-- setup: SELECT count(distkit_inc('bench.lax100kw.' || g, 0, 'lax')) FROM generate_series(1, 100000) g
-- setup: SELECT count(distkit_inc('bench.lax100kw.' || g, 0, 'lax')) FROM generate_series(1, 100000) g
-- flush-figures: yes
\set k random(1, 100000)
SELECT distkit_inc('bench.lax100kw.' || :k, 1, 'lax');
