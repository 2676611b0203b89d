#!/bin/sh
# Embeds the Lua scripts given after the first argument (run by the Makefile):
#   embed-lua.sh header lua/*.lua  -> src/lua_scripts.h: an enum with one
#       DK_LUA_<NAME> per script and the declaration of the table;
#   embed-lua.sh table lua/*.lua   -> src/lua_scripts.c: the table, with each
#       script's name, SHA1 (what EVALSHA needs) and source text.
# The sources live in one object file only; the header changes only when
# scripts are added or removed.
set -eu
what=$1
shift
echo "/* Generated from the lua/ scripts by src/embed-lua.sh: do not edit. */"
case $what in
header)
	echo "#ifndef DISTKIT_LUA_SCRIPTS_H"
	echo "#define DISTKIT_LUA_SCRIPTS_H"
	echo "typedef enum DkLuaScriptId {"
	for f in "$@"; do
		n=$(basename "$f" .lua | tr 'a-z-' 'A-Z_')
		echo "	DK_LUA_$n,"
	done
	echo "	DK_LUA_COUNT"
	echo "} DkLuaScriptId;"
	echo "typedef struct DkLuaScript { const char *name; const char *sha1; const char *source; } DkLuaScript;"
	echo "extern const DkLuaScript DkLuaScripts[DK_LUA_COUNT];"
	echo "#endif"
	;;
table)
	echo '#include "postgres.h"'
	echo '#include "lua_scripts.h"'
	echo "const DkLuaScript DkLuaScripts[DK_LUA_COUNT] = {"
	for f in "$@"; do
		n=$(basename "$f" .lua)
		sha=$(sha1sum "$f" | cut -d' ' -f1)
		echo "	{\"$n\", \"$sha\","
		sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/\t\t"/' -e 's/$/\\n"/' "$f"
		echo "	},"
	done
	echo "};"
	;;
*)
	echo "usage: embed-lua.sh header|table script.lua..." >&2
	exit 1
	;;
esac
