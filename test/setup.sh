#!/bin/bash
# Prepares a Debian bookworm machine for distkit, idempotently:
#  - as root: installs the Debian packages distkit needs (apt-get update
#    first), creates the unprivileged user that runs PostgreSQL
#    ($DISTKIT_USER, default "distkit"), builds and installs the extension;
#  - as another user: only builds (installing needs write access to
#    PostgreSQL's directories, so run "make install" with sudo yourself).
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus-postgres-exporter: test/t/024_prometheus.pl scrapes it;
# libssl-dev + pkgconf: TLS (src/redis_tls.c); openssl: test/certs.sh
PACKAGES="build-essential postgresql-15 postgresql-server-dev-15 postgresql-client-15 libhiredis-dev libssl-dev pkgconf openssl redis-server libipc-run-perl prometheus-postgres-exporter"
DISTKIT_USER=${DISTKIT_USER:-distkit}

if [ "$(id -u)" = 0 ]; then
	missing=""
	for p in $PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "setup: installing$missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
		# the tests start their own exporter on loopback; the packaged
		# service (all interfaces, port 9187) stays off where systemd runs
		if [[ " $missing " == *" prometheus-postgres-exporter "* ]] && command -v systemctl >/dev/null &&
			systemctl is-active --quiet prometheus-postgres-exporter 2>/dev/null; then
			systemctl disable --now prometheus-postgres-exporter >/dev/null 2>&1 || true
		fi
	fi
	id -u "$DISTKIT_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$DISTKIT_USER"
fi

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
make -s PG_CONFIG="$PG_CONFIG" >/dev/null
if [ "$(id -u)" = 0 ]; then
	make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
	echo "setup: distkit built and installed into $("$PG_CONFIG" --pkglibdir)"
else
	echo "setup: distkit built (run 'sudo make install PG_CONFIG=$PG_CONFIG' to install)"
fi
