#!/usr/bin/env bash
# Make the fleet's PKI with `edgeloop certs` (a device CA, a services CA, the broker certificate with its
# SANs, the edgeloop-host certificate, one bundle per device, the device ACL). Lab use; see deploy/SECURITY.md.
#   ./make-certs.sh OUT_DIR BROKER_HOST FLEET [device-id ...]
# BROKER_HOST may be a DNS name or an IP address; extra SANs: EDGELOOP_CERT_SANS="10.0.0.5 mqtt.lan".
set -euo pipefail
out=${1:?out dir}; host=${2:?broker host}; fleet=${3:?fleet}; shift 3
edgeloop=${EDGELOOP:-edgeloop}
sans=()
for san in ${EDGELOOP_CERT_SANS:-}; do
  if [[ $san =~ ^[0-9.]+$|: ]]; then sans+=(--ip "$san"); else sans+=(--dns "$san"); fi
done
"$edgeloop" certs init --out "$out" --broker-host "$host" ${sans[@]+"${sans[@]}"}
for dev in "$@"; do
  "$edgeloop" certs device "$dev" --fleet "$fleet" --out "$out"
done
