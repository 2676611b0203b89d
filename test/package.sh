#!/bin/bash
# Packaging test: builds the Debian package from the committed HEAD and
# installs it on a fresh Debian bookworm root.  Run as root; not part of
# test/run-tests.sh (it needs debootstrap, chroot and a few minutes):
#   ./test/package.sh
# 1. Installs the build dependencies on this machine (apt-get, idempotent),
#    then builds postgresql-15-distkit with dpkg-buildpackage -us -uc -b as
#    the unprivileged user $DISTKIT_USER in $DISTKIT_PKG_DIR (default
#    /tmp/distkit-pkg): the build runs the pg_regress suite against the
#    files in debian/postgresql-15-distkit (debian/run-regress).  Lintian
#    runs on the result when it is installed.
# 2. Copies a pristine debootstrap root (made once, kept in
#    $DISTKIT_PKG_DIR/base) to $DISTKIT_PKG_DIR/root and, inside it:
#    apt-get install ./postgresql-15-distkit_*.deb redis-server; checks the
#    declared dependencies, that no compiler, make nor server headers came
#    with them and that every library the module needs resolves; runs
#    DISTKIT_INSTALLED=1 test/demo.sh against the installed files; then
#    (DISTKIT_PKG_AUTOPKGTEST=0 skips it) installs the autopkgtest's
#    dependencies and runs debian/tests/installcheck, the pg_regress suite
#    against the installed package; finally purges the package and checks
#    that none of its files is left.
# DISTKIT_PKG_REUSE=1 skips step 1 when the .deb of this version is there.
# Prints "package: N passed, M failed" last; exits non-zero on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DISTKIT_USER=${DISTKIT_USER:-distkit}
dir=${DISTKIT_PKG_DIR:-/tmp/distkit-pkg}
fresh=/work/shared/tools/fresh-root.sh
[ -x "$fresh" ] || fresh=${DISTKIT_FRESH_ROOT_TOOL:?set DISTKIT_FRESH_ROOT_TOOL to fresh-root.sh}
[ "$(id -u)" = 0 ] || { echo "package.sh: run as root (apt-get, chroot)" >&2; exit 2; }

passed=0
failed=0
check() {	# check "what" command...: one test
	local what=$1
	shift
	if "$@"; then
		echo "ok: $what"
		passed=$((passed + 1))
	else
		echo "FAILED: $what"
		failed=$((failed + 1))
	fi
}
finish() {
	echo "package: $passed passed, $failed failed"
	[ "$failed" = 0 ]
}

# 1. build
BUILD_DEPS="debhelper dpkg-dev fakeroot libhiredis-dev libssl-dev pkgconf openssl postgresql-server-dev-all postgresql-15 redis-server debootstrap"
missing=""
for p in $BUILD_DEPS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "package: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
id -u "$DISTKIT_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$DISTKIT_USER"

version=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$here/debian/changelog")
arch=$(dpkg --print-architecture)
deb=postgresql-15-distkit_${version}_$arch.deb
mkdir -p "$dir"
if [ -n "${DISTKIT_PKG_REUSE:-}" ] && [ -f "$dir/build/$deb" ]; then
	echo "== reusing $dir/build/$deb (DISTKIT_PKG_REUSE)"
else
rm -rf "$dir/build"
mkdir -p "$dir/build/src"
git -C "$here" archive HEAD | tar -x -C "$dir/build/src"
chown -R "$DISTKIT_USER:" "$dir/build"
echo "== dpkg-buildpackage -us -uc -b (as $DISTKIT_USER, in $dir/build/src)"
if (cd "$dir/build/src" && runuser -u "$DISTKIT_USER" -- env HOME="$dir/build" PATH="$PATH" \
	dpkg-buildpackage -us -uc -b) >"$dir/build.log" 2>&1; then
	check "dpkg-buildpackage built $deb" test -f "$dir/build/$deb"
else
	tail -80 "$dir/build.log"
	check "dpkg-buildpackage (log: $dir/build.log)" false
	finish
fi
n_regress=$(grep -cE '^test .* \.\.\. ok' "$dir/build.log" || true)
check "pg_regress during the build: $n_regress tests ok, none failed" \
	bash -c "[ $n_regress -gt 0 ] && ! grep -qE '^test .*FAILED' '$dir/build.log'"
ls -l "$dir/build/$deb" | awk '{ print "package: " $NF ", " $5 " bytes" }'
dpkg-deb -f "$dir/build/$deb" Depends | sed 's/^/package: Depends: /'
if command -v lintian >/dev/null; then
	echo "== lintian"
	runuser -u "$DISTKIT_USER" -- lintian "$dir/build/distkit_${version}_$arch.changes" || true
fi
fi

# 2. a fresh root: the pristine base once, a copy of it per run
echo "== fresh Debian root in $dir/root"
"$fresh" make "$dir/base" "$here" >/dev/null
# never delete through a mount left by an interrupted run (/dev, /proc...)
for m in dev/shm dev/pts dev sys proc; do umount -l "$dir/root/$m" 2>/dev/null || true; done
if grep -q " $dir/root/" /proc/mounts; then
	echo "package.sh: something is still mounted under $dir/root" >&2
	exit 1
fi
rm -rf "$dir/root"
cp -a "$dir/base" "$dir/root"
mkdir -p "$dir/root/tmp/pkg"
cp "$dir/build/$deb" "$dir/root/tmp/pkg/"
# the sources of a standard bookworm install (debootstrap writes only
# "bookworm main"): the package depends on the server's current minor
# version (postgresql-15 (>> 15.N), from postgresql-common's minor_versions
# at build time), which comes with bookworm-security
url=$(sed -n 's/^deb \([^ ]*\) bookworm main.*/\1/p' "$dir/root/etc/apt/sources.list" | head -1)
{
	echo "deb $url bookworm main"
	echo "deb $url bookworm-updates main"
	echo "deb ${url%/debian*}/debian-security bookworm-security main"
} >"$dir/root/etc/apt/sources.list"
# services must not start inside the root (as on a Debian build chroot)
printf '#!/bin/sh\nexit 101\n' >"$dir/root/usr/sbin/policy-rc.d"
chmod +x "$dir/root/usr/sbin/policy-rc.d"
inroot() { "$fresh" run "$dir/root" "$1"; }

check "apt-get install ./$deb redis-server (fresh root)" inroot "
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && cd /tmp/pkg &&
	apt-get install -y -qq --no-install-recommends ./$deb redis-server >/tmp/pkg/install.log 2>&1 ||
	{ tail -40 /tmp/pkg/install.log; exit 1; }"
check "dependencies declared: postgresql-15, libhiredis0.14 and libssl3 came with it" inroot "
	dpkg-query -W -f='\${Depends}\n' postgresql-15-distkit | grep -q 'libhiredis0.14' &&
	dpkg-query -W -f='\${Depends}\n' postgresql-15-distkit | grep -q 'libssl3' &&
	dpkg-query -W -f='\${Depends}\n' postgresql-15-distkit | grep -q 'postgresql-15 ' &&
	test \"\$(dpkg-query -W -f='\${Status}\n' libhiredis0.14 libssl3 postgresql-15 | sort -u)\" = 'install ok installed'"
check "no build tools installed (gcc, make, postgresql-server-dev-15, libhiredis-dev)" inroot "
	! command -v gcc && ! command -v cc && ! command -v make &&
	! dpkg-query -W -f='\${Status}' postgresql-server-dev-15 2>/dev/null | grep -q installed &&
	! dpkg-query -W -f='\${Status}' libhiredis-dev 2>/dev/null | grep -q installed"
check "distkit.so resolves every library it needs (ldd)" inroot "
	ldd /usr/lib/postgresql/15/lib/distkit.so | tee /tmp/pkg/ldd.out | grep -q libhiredis.so.0.14 &&
	grep -q libssl.so.3 /tmp/pkg/ldd.out &&
	! grep -q 'not found' /tmp/pkg/ldd.out"
check "the exporter query file is installed (docdir/extension/distkit.yaml)" inroot "
	grep -q distkit_stat_calls /usr/share/doc/postgresql-doc-15/extension/distkit.yaml"
echo "== DISTKIT_INSTALLED=1 ./test/demo.sh (fresh root)"
inroot "cd /root/project && DISTKIT_INSTALLED=1 ./test/demo.sh" 2>&1 | tee "$dir/demo.out" || true
check "demo against the installed package ran to the end" grep -qx 'demo: done' "$dir/demo.out"
check "demo run as root from /root/project: no 'could not change directory' (issue 19)" \
	bash -c "! grep -q 'could not change directory' '$dir/demo.out'"
check "demo: trigger counted 100 orders per tenant (orders:acme = 100)" \
	grep -qE '^ orders:acme +\| +100$' "$dir/demo.out"
check "demo: the lax flush reached Redis (views:home = 50000)" \
	bash -c "grep -A2 '^ in_redis' '$dir/demo.out' | tail -1 | grep -qx ' *50000'"

if [ "${DISTKIT_PKG_AUTOPKGTEST:-1}" != 0 ]; then
	echo "== autopkgtest debian/tests/installcheck against the installed package (fresh root)"
	inroot "
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq --no-install-recommends make postgresql-server-dev-all >/dev/null 2>&1 &&
		cd /root/project && debian/tests/installcheck" >"$dir/autopkgtest.log" 2>&1 || true
	grep -E '^test ' "$dir/autopkgtest.log" || tail -40 "$dir/autopkgtest.log"
	n_ap=$(grep -cE '^test .* \.\.\. ok' "$dir/autopkgtest.log" || true)
	check "autopkgtest installcheck: $n_ap tests ok, none failed" \
		bash -c "[ $n_ap -gt 0 ] && ! grep -qE '^test .*FAILED' '$dir/autopkgtest.log' && grep -q '### End 15 installcheck ###' '$dir/autopkgtest.log'"
fi

check "apt-get purge postgresql-15-distkit leaves none of its files" inroot "
	dpkg -L postgresql-15-distkit | grep -E '\\.(so|control|sql)\$' >/tmp/pkg/files &&
	test -s /tmp/pkg/files &&
	DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq postgresql-15-distkit >/dev/null &&
	! xargs -r ls -d 2>/dev/null </tmp/pkg/files | grep -q ."
finish
