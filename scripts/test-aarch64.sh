#!/usr/bin/env bash
# The device agent on linux aarch64 (the Jetson's CPU architecture), under emulation on any x86_64 Debian/Ubuntu:
#   scripts/test-aarch64.sh [--json FILE]        (root, or a user with sudo)
#
# 1. An arm64 Debian bookworm root made once with debootstrap (qemu-user-static runs its binaries) and cached
#    outside the repo: $EDGELOOP_ARM64_ROOT, default ~/.cache/edgeloop/arm64-bookworm (about 3 min the first time).
# 2. The project's wheel installed there with its [device] extra, from wheels only (--only-binary=:all:): what a
#    Jetson without a compiler can install. No torch.
# 3. On the emulated CPU: `edgeloop-agent selftest`, `edgeloop-agent bench` of the zoo's FP32 and INT8 files on
#    the golden images (top-1), and `edgeloop-agent calibrate` (the INT8 form chosen for ARM, verified against
#    FP32 on the golden images).
# Timings under emulation are not an ARM CPU's: the script reports accuracy and the INT8 form, not speed.
# Exit codes: 0 all passed, 1 a step failed, 3 this machine cannot emulate aarch64 (no binfmt_misc).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=""
[ "${1:-}" = "--json" ] && OUT=$2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
ROOT=${EDGELOOP_ARM64_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeloop/arm64-bookworm}
MIRROR=${EDGELOOP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { echo "test-aarch64: $*" >&2; }

need=()
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# arm64 binaries run through binfmt_misc; in a container it may need mounting first
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || $SUDO mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc || true
  $SUDO update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  log "cannot run aarch64 binaries here: binfmt_misc has no qemu-aarch64 entry (needs a privileged machine)"
  exit 3
fi

if [ ! -x "$ROOT/usr/bin/python3" ]; then
  log "making the arm64 root in $ROOT (debootstrap, about 3 min)"
  $SUDO rm -rf "$ROOT.partial"
  mkdir -p "$(dirname "$ROOT")"
  $SUDO debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOT.partial" "$MIRROR" >/dev/null
  $SUDO mv "$ROOT.partial" "$ROOT"
fi

# the wheel, its extras' wheels, the zoo files and the golden images go in; the registry's CA bundle, pip's
# settings that reach the registry, and DNS too
$SUDO mkdir -p "$ROOT/src/dist" "$ROOT/src/zoo" "$ROOT/etc/ssl/certs" "$ROOT/work"
$SUDO rm -f "$ROOT"/src/dist/*.whl
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
"$PYTHON" -m pip wheel -q --no-deps --disable-pip-version-check -w "$ROOT/src/dist" "$REPO"
$SUDO cp host/zoo/resnet20.onnx host/zoo/resnet20-int8.onnx "$ROOT/src/zoo/"
$SUDO cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
CERT=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$CERT" ] && $SUDO cp "$CERT" "$ROOT/etc/ssl/certs/edgeloop-host-ca.crt"

# /proc and /sys for the emulated programs (ONNX Runtime reads the CPU list from /sys), unmounted on exit
for fs in proc sys; do
  mountpoint -q "$ROOT/$fs" || $SUDO mount -t "${fs/sys/sysfs}" "$fs" "$ROOT/$fs"
done
trap '$SUDO umount "$ROOT/proc" "$ROOT/sys" 2>/dev/null || true' EXIT
CHROOT=$(command -v chroot || echo /usr/sbin/chroot)
in_root() {
  $SUDO env -i PATH=/opt/edgeloop/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/edgeloop-host-ca.crt PIP_DEFAULT_TIMEOUT=180 \
    ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} ${HTTP_PROXY:+HTTP_PROXY=$HTTP_PROXY} \
    "$CHROOT" "$ROOT" "$@"
}

log "$(in_root uname -m), $(in_root python3 -V): installing edgeloop[device] from wheels only"
[ -x "$ROOT/opt/edgeloop/bin/python" ] || in_root python3 -m venv /opt/edgeloop
wheel=$(basename "$ROOT"/src/dist/edgeloop-*.whl)
in_root /opt/edgeloop/bin/pip install -q --only-binary=:all: --force-reinstall --no-deps "/src/dist/$wheel"
# ONNX Runtime as JetPack 6's Python 3.10 resolves it (1.23.2, the last release with cp310 wheels): bookworm's
# Python 3.11 would take the newest, and 1.32.0's aarch64 wheel dies with SIGSEGV at import under Debian
# bookworm's qemu-user 7.2 (measured here; whether on a real ARM CPU is not known). EDGELOOP_ARM64_ORT="" takes
# what pip resolves.
ORT=${EDGELOOP_ARM64_ORT-1.23.2}
in_root /opt/edgeloop/bin/pip install -q --only-binary=:all: "/src/dist/$wheel[device]" ${ORT:+"onnxruntime==$ORT"}
if in_root /opt/edgeloop/bin/python -c 'import torch' 2>/dev/null; then
  log "torch was installed: the device side must not need it"; exit 1
fi

GOLDEN=$(in_root /opt/edgeloop/bin/python -c 'from shared.samples import golden_dir; print(golden_dir())')
status=0
step() {  # name, then the command; its stdout (JSON) goes to /work/<name>.json in the root
  local name=$1; shift
  log "$name: $*"
  if in_root "$@" > "$ROOT/work/$name.json.tmp"; then
    mv "$ROOT/work/$name.json.tmp" "$ROOT/work/$name.json"
  else
    log "$name FAILED"; mv "$ROOT/work/$name.json.tmp" "$ROOT/work/$name.json"; status=1
  fi
}
step selftest edgeloop-agent selftest /src/zoo/resnet20.onnx --runtime onnxruntime --json
step bench-fp32 edgeloop-agent bench /src/zoo/resnet20.onnx --runtime onnxruntime --data "$GOLDEN" \
  --iterations 20 --warmup 3 --rounds 1 --throughput-batch 64 --json
step bench-int8 edgeloop-agent bench /src/zoo/resnet20-int8.onnx --runtime onnxruntime --data "$GOLDEN" \
  --iterations 20 --warmup 3 --rounds 1 --throughput-batch 64 --json
step calibrate edgeloop-agent calibrate /src/zoo/resnet20.onnx --calib-dir "$GOLDEN" --verify-dir "$GOLDEN" \
  --out /work/resnet20-int8-arm.onnx --runtime onnxruntime --images 100 --json
step bench-int8-arm edgeloop-agent bench /work/resnet20-int8-arm.onnx --runtime onnxruntime --data "$GOLDEN" \
  --iterations 20 --warmup 3 --rounds 1 --throughput-batch 64 --json

"$PYTHON" - "$ROOT/work" "$OUT" <<'PY'
"""One table of what ran on the emulated aarch64 CPU (and one JSON with --json)."""
import json
import sys
from pathlib import Path

work, out = Path(sys.argv[1]), sys.argv[2]
results = {}
for f in sorted(work.glob("*.json")):
    try:
        results[f.stem] = json.loads(f.read_text())
    except ValueError:
        results[f.stem] = {"error": f.read_text()[-500:]}
st = results.get("selftest", {})
print(f"machine      {st.get('machine', {}).get('arch')} {st.get('python', '')} ({st.get('machine', {}).get('cpu')})")
print(f"self-test    {'passed' if st.get('passed') else 'FAILED'}: golden top-1 {100 * st.get('golden_top1', 0):.1f}%")
for name in ("bench-fp32", "bench-int8", "bench-int8-arm"):
    r = results.get(name, {})
    top1 = f"{100 * r['top1']:.1f}% of {r['n_images']}" if "top1" in r else r.get("error", "no result")[:80]
    print(f"{name:<12} {r.get('model', ''):<28} {r.get('precision', ''):<5} top-1 {top1}")
cal = results.get("calibrate", {})
if "form" in cal:
    v = cal["verification"].get("labelled") or next((x for x in cal["verification"].values() if isinstance(x, dict)), {})
    print(f"calibrate    form {cal['form']['name']} ({cal['why']}); verified: {v.get('reason', '?')}")
if out:
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
PY
exit $status
