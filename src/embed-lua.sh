#!/bin/sh
# Embeds the Lua scripts given after the first argument (run by the Makefile):
#   embed-lua.sh header lua/*.lua  -> src/lua_scripts.h: an enum with one
#       DK_LUA_<NAME> per script and the declaration of the table;
#   embed-lua.sh table lua/*.lua   -> src/lua_scripts.c: the table, with each
#       script's name, SHA1 (what EVALSHA needs) and source text;
#   embed-lua.sh expand lua/x.lua  -> the script as Redis runs it (benchmarks
#       and tests that load a script themselves).
# A line "-- @include lib/x.lua" in a script is replaced by the file
# lua/lib/x.lua (pieces two scripts share); the SHA1 and the text are those
# of the whole script as Redis runs it.
# The sources live in one object file only; the header changes only when
# scripts are added or removed.
set -eu

# the script's text with its includes in place
expand() {
	awk -v dir="$(dirname "$1")" '
		/^-- @include / {
			f = dir "/" $3
			n = 0
			while ((r = (getline l < f)) > 0) { print l; n++ }
			if (r < 0 || n == 0) { print "embed-lua.sh: cannot include " f > "/dev/stderr"; exit 1 }
			close(f)
			next
		}
		{ print }' "$1"
}
what=$1
shift
[ "$what" = expand ] || echo "/* Generated from the lua/ scripts by src/embed-lua.sh: do not edit. */"
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
		expand "$f" > /dev/null		# stops here (set -e) if an include is missing
		sha=$(expand "$f" | sha1sum | cut -d' ' -f1)
		echo "	{\"$n\", \"$sha\","
		expand "$f" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/\t\t"/' -e 's/$/\\n"/'
		echo "	},"
	done
	echo "};"
	;;
expand)
	for f in "$@"; do expand "$f"; done
	exit 0
	;;
*)
	echo "usage: embed-lua.sh header|table|expand script.lua..." >&2
	exit 1
	;;
esac
