"""The fleet's certificates (``edgeloop certs``), made with ``cryptography``: no openssl shell-outs.

One folder holds them (``Pki``); ``deploy/mosquitto/mosquitto.conf`` reads the broker's part of it::

    ca.crt ca.key                    device CA: signs the broker's and the devices' certificates
    services-ca.crt services-ca.key  services CA: signs the host services' client certificates
    upload-secret                    the key of the devices' upload tokens (``edgeloop serve --upload-secret-file``)
    broker/                          what the broker reads, and nothing else (no CA key): /etc/mosquitto/certs
      ca.crt services-ca.crt           copies of the two CA certificates
      broker.crt broker.key            the broker (server) certificate: CN and SANs = every name and IP devices use
      crl.pem                          revoked device certificates (the device listener's crlfile)
      acl-devices                      the device listener's ACL, generated from devices/ (``host.fleet.acl``)
    devices/<id>/                    one bundle per device: ca.crt device.crt device.key upload.token
    services/<name>.crt .key         host service identities (``edgeloop-host`` from ``init``)
    revoked/<id>-<serial>/           revoked bundles

Two CAs keep the listeners apart: the host-services listener trusts only the services CA, so a device's
certificate cannot even finish a TLS handshake there (where client ids are not forced to the CN). A device
certificate's CN is its device id and its OU its fleet; the ACL is generated from them. Private keys are
P-256 and written 0600 (Mosquitto 2.0 reads its key after dropping to its own user: give that user
broker/broker.key, e.g. ``chown mosquitto``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from host.fleet import acl, tokens
from shared.errors import EdgeloopError

CA_DAYS = 3650
LEAF_DAYS = 825  # what public CAs allowed for server certificates; reissue with `certs init` / `certs device`
RESERVED_PREFIX = "edgeloop-"  # host services' client ids (edgeloop-host-*, edgeloop-ingest-*): no device may take one
HOST_SERVICE = "edgeloop-host"
_BACKDATE = dt.timedelta(minutes=5)  # a device whose clock is a little behind still accepts a fresh certificate

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class DeviceBundle:
    device_id: str
    fleet: str
    folder: Path
    cert: Path
    key: Path
    ca: Path
    upload_token: Path


class Pki:
    """The PKI folder's layout and its operations."""

    def __init__(self, root: str | Path) -> None:
        self.root = r = Path(root)
        self.ca_cert, self.ca_key = r / "ca.crt", r / "ca.key"
        self.services_ca_cert, self.services_ca_key = r / "services-ca.crt", r / "services-ca.key"
        self.upload_secret, self.broker_dir = r / "upload-secret", r / "broker"
        self.broker_cert, self.broker_key = self.broker_dir / "broker.crt", self.broker_dir / "broker.key"
        self.crl, self.acl = self.broker_dir / "crl.pem", self.broker_dir / "acl-devices"
        self.devices, self.services = r / "devices", r / "services"

    # -- init ----------------------------------------------------------------------------------
    def init(self, broker_host: str, ips: list[str] | None = None, dns: list[str] | None = None) -> Issued:
        """CAs and the upload secret (kept when they exist), a fresh broker certificate with every SAN,
        the ``edgeloop-host`` service certificate, an empty CRL and the device ACL."""
        self.broker_dir.mkdir(parents=True, exist_ok=True)
        if not self.ca_cert.exists():
            _write_ca(self.ca_cert, self.ca_key, "edgeloop device CA")
        if not self.services_ca_cert.exists():
            _write_ca(self.services_ca_cert, self.services_ca_key, "edgeloop services CA")
        for ca in (self.ca_cert, self.services_ca_cert):
            shutil.copyfile(ca, self.broker_dir / ca.name)
        if not self.upload_secret.exists():
            tokens.write_private(self.upload_secret, tokens.new_upload_secret() + b"\n")
        names = _san_names(broker_host, ips or [], dns or [])
        broker = self._issue(self.ca_cert, self.ca_key, broker_host, names, server=True, out=self.broker_dir / "broker")
        if not (self.services / f"{HOST_SERVICE}.crt").exists():
            self.issue_service(HOST_SERVICE)
        if not self.crl.exists():
            self.write_crl([])
        self.write_acl()
        return broker

    def _ca(self, cert: Path, key: Path) -> tuple[x509.Certificate, PrivateKey]:
        if not cert.exists() or not key.exists():
            raise EdgeloopError(f"no CA in {self.root}; make one with `edgeloop certs init --out {self.root} ...`")
        ca_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise EdgeloopError(f"{key} is not an EC private key")
        return x509.load_pem_x509_certificate(cert.read_bytes()), ca_key

    def _issue(
        self,
        ca_cert: Path,
        ca_key: Path,
        cn: str,
        sans: list[x509.GeneralName],
        server: bool,
        out: Path,
        ou: str | None = None,
        days: int = LEAF_DAYS,
    ) -> Issued:
        ca, signer = self._ca(ca_cert, ca_key)
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if ou is not None:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(x509.Name(attrs), ca.subject, key, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(signer, hashes.SHA256())
        issued = Issued(out.parent / f"{out.name}.crt", out.parent / f"{out.name}.key")
        _write_key(issued.key, key)
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return issued

    # -- devices and services ------------------------------------------------------------------
    def issue_device(self, device_id: str, fleet: str) -> DeviceBundle:
        """A device's bundle (CN = device id, OU = fleet), its upload token, and the regenerated ACL."""
        acl.check_id(device_id, "device id")
        acl.check_id(fleet, "fleet")
        if device_id.startswith(RESERVED_PREFIX):
            raise EdgeloopError(f"device ids starting with {RESERVED_PREFIX!r} are the host services' client ids")
        folder = self.devices / device_id
        folder.mkdir(parents=True, exist_ok=True)
        issued = self._issue(self.ca_cert, self.ca_key, device_id, [], server=False, out=folder / "device", ou=fleet)
        shutil.copyfile(self.ca_cert, folder / "ca.crt")
        token = tokens.upload_token(tokens.load_upload_secret(self.upload_secret), fleet, device_id)
        tokens.write_private(folder / "upload.token", (token + "\n").encode())
        self.write_acl()
        return DeviceBundle(
            device_id, fleet, folder, issued.cert, issued.key, folder / "ca.crt", folder / "upload.token"
        )

    def issue_service(self, name: str) -> Issued:
        """A host service's client certificate (CN = name), signed by the services CA."""
        if not name.startswith(RESERVED_PREFIX) or not acl.SERVICE_RE.match(name):
            raise EdgeloopError(f"service names start with {RESERVED_PREFIX!r} and use [A-Za-z0-9_.-] (got {name!r})")
        self.services.mkdir(parents=True, exist_ok=True)
        return self._issue(
            self.services_ca_cert, self.services_ca_key, name, [], server=False, out=self.services / name
        )

    def device_certs(self) -> list[tuple[str, str, x509.Certificate]]:
        """(device id, fleet, certificate) of every issued device, sorted by id."""
        out = []
        for path in sorted(self.devices.glob("*/device.crt")):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            cn = _attr(cert, NameOID.COMMON_NAME)
            ou = _attr(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)
            if cn != path.parent.name or ou is None:
                raise EdgeloopError(f"{path} is not an edgeloop device certificate (CN {cn!r}, OU {ou!r})")
            out.append((cn, ou, cert))
        return out

    def write_acl(self) -> Path:
        entries = [(device, fleet) for device, fleet, _ in self.device_certs()]
        self.acl.write_text(acl.device_acl(entries))
        return self.acl

    # -- revocation ----------------------------------------------------------------------------
    def revoke_device(self, device_id: str) -> int:
        """Add the device's certificate to the CRL, drop its ACL entries, keep the bundle under revoked/."""
        folder = self.devices / acl.check_id(device_id, "device id")
        if not (folder / "device.crt").exists():
            raise EdgeloopError(f"no device {device_id!r} in {self.devices}")
        cert = x509.load_pem_x509_certificate((folder / "device.crt").read_bytes())
        self.write_crl([*self.revoked_serials(), cert.serial_number])
        target = self.root / "revoked" / f"{device_id}-{cert.serial_number:x}"
        target.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(target)
        self.write_acl()
        return cert.serial_number

    def revoked_serials(self) -> list[int]:
        if not self.crl.exists():
            return []
        return [r.serial_number for r in x509.load_pem_x509_crl(self.crl.read_bytes())]

    def write_crl(self, serials: list[int]) -> Path:
        ca, signer = self._ca(self.ca_cert, self.ca_key)
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + dt.timedelta(days=CA_DAYS))
        )
        for serial in sorted(set(serials)):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        self.crl.write_bytes(builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return self.crl


def _san_names(broker_host: str, ips: list[str], dns: list[str]) -> list[x509.GeneralName]:
    """The broker host itself (an IP SAN when it is an address, else a DNS SAN), then every --ip and --dns:
    a device verifies the name or address it connects to against these."""
    names: list[x509.GeneralName] = [_ip_name(broker_host) or _dns_name(broker_host)]
    for text in ips:
        name = _ip_name(text)
        if name is None:
            raise EdgeloopError(f"--ip {text!r} is not an IP address")
        names.append(name)
    names += [_dns_name(text) for text in dns]
    return list(dict.fromkeys(names))


def _ip_name(text: str) -> x509.GeneralName | None:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        return None


def _dns_name(text: str) -> x509.GeneralName:
    if not acl.DNS_RE.match(text):
        raise EdgeloopError(f"{text!r} is neither an IP address nor a DNS name")
    return x509.DNSName(text)


def _builder(subject: x509.Name, issuer: x509.Name, key: PrivateKey, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write_ca(cert_path: Path, key_path: Path, cn: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        _builder(name, name, key, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tokens.write_private(path, pem)


def _attr(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None
