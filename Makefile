# distkit — PGXS build.  The version lives in distkit.control only.
EXTENSION  = distkit
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" distkit.control)

MODULE_big = distkit
# src/lua_scripts.c is generated (below), so it may not exist yet
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c) src/lua_scripts.c))
LUA_SCRIPTS = $(sort $(wildcard lua/*.lua))
# pieces the scripts include ("-- @include lib/x.lua"), not scripts themselves
LUA_LIBS = $(wildcard lua/lib/*.lua)

DATA_built = distkit--$(EXTVERSION).sql
# upgrade scripts, and the install scripts of earlier versions (sql/old/) so
# that CREATE EXTENSION distkit VERSION '<old>' + ALTER EXTENSION UPDATE works
DATA = $(wildcard distkit--*--*.sql) $(wildcard sql/old/distkit--*.sql)
# installed into $(pg_config --docdir)/extension/ (the exporter query file too)
DOCS = README.md contrib/prometheus/distkit.yaml

# OpenSSL (TLS to Redis, src/redis_tls.c) through pkg-config
PG_CPPFLAGS = -Isrc $(shell pkg-config --cflags openssl)
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = -lhiredis $(shell pkg-config --libs openssl)

# pg_regress suite: run through test/run-tests.sh, which starts a
# redis-server on a free loopback port and a temporary PostgreSQL.  The
# Debian build runs it against pg_virtualenv's server instead
# (debian/run-regress: DISTKIT_REGRESS_INSTANCE= and REGRESS_SKIP=...).
REGRESS = $(filter-out $(REGRESS_SKIP),$(sort $(basename $(notdir $(filter-out sql/distkit.sql,$(wildcard sql/*.sql))))))
REGRESS_OPTS = --encoding=UTF8 --no-locale $(DISTKIT_REGRESS_INSTANCE)
DISTKIT_REGRESS_INSTANCE ?= --temp-instance=$(DISTKIT_TMP)/pg --temp-config=$(DISTKIT_TMP)/postgresql.conf
DISTKIT_TMP ?= $(CURDIR)/test/tmp

EXTRA_CLEAN = src/lua_scripts.h src/lua_scripts.c distkit--$(EXTVERSION).sql distkit-$(EXTVERSION).zip

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# the script table (src/lua_scripts.c) and its enum (src/lua_scripts.h,
# rewritten only when it changes: editing a script recompiles one file)
src/lua_scripts.h: $(LUA_SCRIPTS) src/embed-lua.sh
	sh src/embed-lua.sh header $(LUA_SCRIPTS) > $@.tmp
	if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi
src/lua_scripts.c: $(LUA_SCRIPTS) $(LUA_LIBS) src/embed-lua.sh
	sh src/embed-lua.sh table $(LUA_SCRIPTS) > $@.tmp && mv $@.tmp $@

# the LLVM bitcode files (with_llvm) are built from the same sources
$(OBJS) $(OBJS:.o=.bc): src/lua_scripts.h $(wildcard src/*.h)

distkit--$(EXTVERSION).sql: sql/distkit.sql distkit.control
	( echo "-- Generated from sql/distkit.sql; do not edit."; cat $< ) > $@

.PHONY: test demo bench dist
test:
	test/run-tests.sh
demo:
	test/demo.sh
# benchmarks (bench/run.sh; BENCH_QUICK=1 for a smoke run): report in bench/results/
bench:
	bench/run.sh
# PGXN release archive of the committed HEAD: distkit-<version>.zip with
# every file under distkit-<version>/, its META.json checked first
dist:
	test/check-meta.sh
	git archive --format=zip --prefix=distkit-$(EXTVERSION)/ -o distkit-$(EXTVERSION).zip HEAD
	test/check-meta.sh distkit-$(EXTVERSION).zip
