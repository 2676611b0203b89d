-- title: lax distkit_inc, 100k keys
-- measures: buffered increment on a random key out of 100000: more keys than distkit.lax_capacity (65536 by default), so keys that find no free or evictable entry are counted strictly (strict_fallbacks in distkit_stats).
-- requires: SELECT distkit_inc('bench.probe', 0, 'lax')
-- flush-figures: yes
\set k random(1, 100000)
SELECT distkit_inc('bench.lax100k.' || :k, 1, 'lax');
