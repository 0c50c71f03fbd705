"""`edgeloop certs`: the fleet's CA, broker, host-service and device certificates, and the device ACL."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _print(args: argparse.Namespace, result: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(lines))


def _cmd_init(args: argparse.Namespace) -> int:
    from host.fleet.pki import HOST_SERVICE, Pki

    pki = Pki(args.out)
    broker = pki.init(args.broker_host, args.ip, args.dns)
    host = pki.services / f"{HOST_SERVICE}.crt"
    result = {
        "out": str(pki.root),
        "ca": str(pki.ca_cert),
        "broker_dir": str(pki.broker_dir),
        "broker_cert": str(broker.cert),
        "host_cert": str(host),
        "host_key": str(host.with_suffix(".key")),
        "acl": str(pki.acl),
        "upload_secret": str(pki.upload_secret),
        "sans": [args.broker_host, *args.ip, *args.dns],
    }
    _print(args, result, [
        f"PKI in {pki.root}: device CA ca.crt, services CA services-ca.crt, broker certificate broker.crt "
        f"for {', '.join(result['sans'])}",
        f"broker: {pki.broker_dir} is its /etc/mosquitto/certs (deploy/mosquitto/mosquitto.conf); the mosquitto "
        "user must read broker.key",
        f"host:   edgeloop serve --broker mqtts://{args.broker_host}:8884 --broker-ca {pki.ca_cert} "
        f"--broker-cert {host} --broker-key {host.with_suffix('.key')} --upload-secret-file {pki.upload_secret}",
        f"next:   edgeloop certs device DEVICE --fleet FLEET --out {pki.root}",
    ])  # fmt: skip
    return 0


def _cmd_device(args: argparse.Namespace) -> int:
    from host.fleet.pki import Pki

    pki = Pki(args.out)
    b = pki.issue_device(args.device, args.fleet)
    result = {"device_id": b.device_id, "fleet": b.fleet, "bundle": str(b.folder), "cert": str(b.cert),
              "key": str(b.key), "ca": str(b.ca), "upload_token": str(b.upload_token), "acl": str(pki.acl)}  # fmt: skip
    _print(args, result, [
        f"{b.fleet}/{b.device_id}: bundle in {b.folder} (copy it to the device's /etc/edgeloop/tls/); "
        f"ACL {pki.acl} rewritten: reload the broker (SIGHUP)",
        "agent.toml:",
        f'  device_id = "{b.device_id}"',
        f'  fleet = "{b.fleet}"',
        '  upload_token_file = "/etc/edgeloop/tls/upload.token"',
        "  [broker]",
        '  url = "mqtts://BROKER:8883"',
        "  [broker.tls]",
        '  ca_file = "/etc/edgeloop/tls/ca.crt"',
        '  cert_file = "/etc/edgeloop/tls/device.crt"',
        '  key_file = "/etc/edgeloop/tls/device.key"',
    ])  # fmt: skip
    return 0


def _cmd_service(args: argparse.Namespace) -> int:
    from host.fleet.pki import Pki

    issued = Pki(args.out).issue_service(args.name)
    result = {"name": args.name, "cert": str(issued.cert), "key": str(issued.key)}
    _print(args, result, [f"{args.name}: {issued.cert} and {issued.key} (services CA; listener 8884)"])
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from host.fleet.pki import Pki

    pki = Pki(args.out)
    serial = pki.revoke_device(args.device)
    result = {"device_id": args.device, "serial": f"{serial:x}", "crl": str(pki.crl), "acl": str(pki.acl)}
    _print(args, result, [
        f"revoked {args.device} (serial {serial:x}): in {pki.crl}, out of {pki.acl}. Reload the broker (SIGHUP): "
        "it then refuses the certificate and allows a live connection nothing; a restart also drops that connection",
    ])  # fmt: skip
    return 0


def _cmd_acl(args: argparse.Namespace) -> int:
    from host.fleet.pki import Pki

    pki = Pki(args.out)
    path = pki.write_acl()
    devices = [{"device_id": d, "fleet": f} for d, f, _ in pki.device_certs()]
    _print(args, {"acl": str(path), "devices": devices}, [f"{path}: {len(devices)} devices"])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certs", help="TLS certificates for the broker, the host and each device; the device ACL")
    csub = p.add_subparsers(dest="certs_command", required=True)

    def command(name: str, text: str, handler: Any) -> argparse.ArgumentParser:
        c = csub.add_parser(name, help=text)
        c.add_argument("--out", default="pki", help="the PKI folder (default ./pki)")
        c.add_argument("--json", action="store_true")
        c.set_defaults(handler=handler)
        return c

    i = command("init", "CAs, the broker certificate (IP and DNS SANs), the edgeloop-host certificate", _cmd_init)
    i.add_argument("--broker-host", required=True, help="the name or IP devices connect to (CN and first SAN)")
    i.add_argument("--ip", action="append", default=[], help="another IP address of the broker (repeatable)")
    i.add_argument("--dns", action="append", default=[], help="another DNS name of the broker (repeatable)")
    d = command("device", "a device's certificate bundle and upload token; rewrites the ACL", _cmd_device)
    d.add_argument("device", help="device id (the certificate's CN)")
    d.add_argument("--fleet", required=True, help="the device's fleet (the ACL binds it)")
    s = command("service", "another host service identity (services CA), e.g. edgeloop-host-2", _cmd_service)
    s.add_argument("name", help="its name, starting with edgeloop- (the certificate's CN)")
    r = command("revoke", "revoke a device: into the CRL, out of the ACL", _cmd_revoke)
    r.add_argument("device")
    command("acl", "rewrite the device ACL from the issued certificates", _cmd_acl)
