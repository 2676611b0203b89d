#!/bin/sh
# Turns the Lua scripts given as arguments into a C header (on stdout):
# an enum with one DK_LUA_<NAME> per script and a table with its name,
# SHA1 (what EVALSHA needs) and source text.  Run by the Makefile.
set -eu
echo "/* Generated from the lua/ scripts by src/embed-lua.sh: do not edit. */"
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
echo "static const DkLuaScript DkLuaScripts[DK_LUA_COUNT] = {"
for f in "$@"; do
	n=$(basename "$f" .lua)
	sha=$(sha1sum "$f" | cut -d' ' -f1)
	echo "	{\"$n\", \"$sha\","
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/\t\t"/' -e 's/$/\\n"/' "$f"
	echo "	},"
done
echo "};"
echo "#endif"
