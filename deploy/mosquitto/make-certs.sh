#!/usr/bin/env bash
# Make a CA, a broker certificate and client certificates for edgeloop (test/lab use;
# use your PKI in production).  Usage: ./make-certs.sh OUT_DIR BROKER_HOST [device-id ...]
set -euo pipefail
out=${1:?out dir}; host=${2:?broker host}; shift 2
mkdir -p "$out"; cd "$out"
days=825
[ -f ca.key ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -keyout ca.key -out ca.crt -subj "/CN=edgeloop-ca"
issue() {  # name, subject CN, extra extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days $days -out "$1.crt" -extfile "$1.ext"
  rm -f "$1.csr" "$1.ext"; chmod 600 "$1.key"
}
issue server "$host" "subjectAltName=DNS:$host
extendedKeyUsage=serverAuth"
issue edgeloop-host edgeloop-host "extendedKeyUsage=clientAuth"
for dev in "$@"; do
  [[ $dev =~ ^[A-Za-z0-9_-]{1,64}$ ]] || { echo "bad device id: $dev" >&2; exit 2; }
  issue "$dev" "$dev" "extendedKeyUsage=clientAuth"
done
echo "certificates in $out (CA: ca.crt)"
