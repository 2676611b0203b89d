-- title: transactional lax inc
-- measures: distkit_inc(key, 1, 'lax') with distkit.transactional = on (set per connection through PGOPTIONS): the increment is buffered at commit; one autocommit statement per transaction, as lax_inc_1.
-- requires: SHOW distkit.transactional
-- pgoptions: -c distkit.transactional=on
-- flush-figures: yes
SELECT distkit_inc('bench.laxtxn', 1, 'lax');
