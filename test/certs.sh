#!/bin/bash
# Makes the certificates of distkit's TLS tests in DIR (idempotent: an
# existing DIR/ca.crt is kept), all with openssl, in well under a second:
#   ca.crt ca.key              a test certificate authority
#   server.crt server.key      signed by it, for 127.0.0.1, ::1 and localhost
#   client.crt client.key      a client certificate (mutual TLS)
#   expired.crt expired.key    a server certificate that expired in the past
#   wronghost.crt wronghost.key  a server certificate for redis.example.com only
#   other-ca.crt               an unrelated CA (the "unknown CA" case)
# Keys are mode 0600.  Usage: test/certs.sh DIR
set -euo pipefail
dir=${1:?usage: certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
[ -s ca.crt ] && [ -s wronghost.crt ] && exit 0
umask 077
days=3650

openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days $days \
	-subj "/CN=distkit test CA" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days $days \
	-subj "/CN=distkit other CA" 2>/dev/null

# sign NAME SUBJECT EXTFILE-LINES [openssl x509 date options…]
sign() {
	local name=$1 subj=$2 ext=$3
	shift 3
	openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
	printf '%s\n' "$ext" >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
		-out "$name.crt" -extfile "$name.ext" "$@" 2>/dev/null
	rm -f "$name.csr" "$name.ext"
}
sign server "/CN=localhost" "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" -days $days
sign client "/CN=distkit client" "extendedKeyUsage=clientAuth" -days $days
sign wronghost "/CN=redis.example.com" "subjectAltName=DNS:redis.example.com" -days $days
# expired: valid for one day, two years ago (openssl 3.0 x509 has no
# -not_before/-not_after, so sign through "openssl ca" with explicit dates)
openssl req -newkey rsa:2048 -nodes -keyout expired.key -out expired.csr -subj "/CN=localhost" 2>/dev/null
mkdir -p ca.db
: >ca.db/index.txt
echo 1000 >ca.db/serial
cat >ca.db/ca.cnf <<CNF
[ca]
default_ca = test
[test]
dir = ca.db
database = ca.db/index.txt
new_certs_dir = ca.db
serial = ca.db/serial
default_md = sha256
policy = any
copy_extensions = none
[any]
commonName = supplied
[ext]
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost
CNF
openssl ca -batch -config ca.db/ca.cnf -cert ca.crt -keyfile ca.key -in expired.csr -out expired.crt \
	-startdate 20240101000000Z -enddate 20240102000000Z -extensions ext -notext 2>/dev/null
rm -rf expired.csr ca.db
chmod 644 ./*.crt
chmod 600 ./*.key
