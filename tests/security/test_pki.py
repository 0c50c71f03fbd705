"""`edgeloop certs`: the CAs, the broker certificate's SANs, device and service certificates, the generated
ACL, revocation, private key modes, the upload tokens, and the host's TLS settings."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from host.cli import main
from host.fleet import acl, tokens
from host.fleet.pki import Pki
from host.fleet.tls import BrokerTls, broker_settings
from shared.errors import EdgeloopError
from tests.helpers import REPO

pytestmark = pytest.mark.security


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_two_cas_and_a_broker_certificate_with_ip_and_dns_sans(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.init("mqtt.lab.example", ips=["10.0.0.5", "127.0.0.1"], dns=["localhost"])
    ca, services_ca, broker = _cert(pki.ca_cert), _cert(pki.services_ca_cert), _cert(pki.broker_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.subject != services_ca.subject
    broker.verify_directly_issued_by(ca)
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.lab.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    eku = broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    host = _cert(pki.services / "edgeloop-host.crt")
    host.verify_directly_issued_by(services_ca)  # the services CA, not the device CA
    assert host.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edgeloop-host"
    assert pki.revoked_serials() == []
    for key in (pki.ca_key, pki.services_ca_key, pki.broker_key, pki.services / "edgeloop-host.key", pki.upload_secret):
        assert _mode(key) == 0o600, key
    # again, with another SAN: the CAs and the secret stay, the broker certificate is reissued
    secret = pki.upload_secret.read_bytes()
    pki.init("192.168.1.2")
    assert _cert(pki.ca_cert) == ca and pki.upload_secret.read_bytes() == secret
    san = _cert(pki.broker_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.2")]
    with pytest.raises(EdgeloopError, match="not an IP"):
        pki.init("h", ips=["mqtt.lan"])
    with pytest.raises(EdgeloopError, match="neither an IP"):
        pki.init("bad name!")


def test_device_certificates_carry_id_and_fleet_and_the_acl_binds_both(pki: Pki) -> None:
    cert = _cert(pki.devices / "dev-a" / "device.crt")
    cert.verify_directly_issued_by(_cert(pki.ca_cert))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-a"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "lab"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    for name in ("device.key", "upload.token"):
        assert _mode(pki.devices / "dev-a" / name) == 0o600
    assert (pki.devices / "dev-a" / "ca.crt").read_bytes() == pki.ca_cert.read_bytes()
    rules = [line for line in pki.acl.read_text().splitlines() if line and not line.startswith("#")]
    assert rules[:5] == [
        "user dev-a",
        "topic write edgeloop/v1/lab/dev-a/status",
        "topic write edgeloop/v1/lab/dev-a/report/+",
        "topic write edgeloop/v1/lab/dev-a/result",
        "topic read edgeloop/v1/lab/dev-a/cmd",
    ]
    assert "user dev-c" in rules and "topic read edgeloop/v1/other/dev-c/cmd" in rules
    # no wildcard where the fleet or the device goes, no pattern lines, nothing readwrite
    for line in rules:
        if line.startswith("topic"):
            assert line.split("/")[2] != "+" and line.split("/")[3] != "+" and "#" not in line, line
    assert not any(line.startswith(("pattern", "topic readwrite")) for line in rules)


@pytest.mark.parametrize("bad", ["edgeloop-host", "edgeloop-ingest-0", "a/b", "dev a", "x" * 65, "dev-a\n", "+", "#"])
def test_device_ids_that_could_break_an_acl_or_take_a_host_client_id_are_refused(tmp_path: Path, bad: str) -> None:
    pki = Pki(tmp_path / "pki")
    pki.init("127.0.0.1")
    with pytest.raises(EdgeloopError):
        pki.issue_device(bad, "lab")
    if not bad.startswith("edgeloop-"):  # a fleet may be called edgeloop-*: no client id comes from it
        with pytest.raises(EdgeloopError):
            pki.issue_device("dev-1", bad)
    assert not list(pki.devices.glob("*"))


def test_revoking_a_device_puts_it_in_the_crl_and_out_of_the_acl(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.init("127.0.0.1")
    pki.issue_device("dev-1", "lab")
    pki.issue_device("dev-2", "lab")
    serial = _cert(pki.devices / "dev-1" / "device.crt").serial_number
    assert pki.revoke_device("dev-1") == serial
    assert pki.revoked_serials() == [serial]
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    assert crl.is_signature_valid(_cert(pki.ca_cert).public_key())  # type: ignore[arg-type]
    assert "dev-1" not in pki.acl.read_text() and "user dev-2" in pki.acl.read_text()
    assert not (pki.devices / "dev-1").exists() and list((pki.root / "revoked").iterdir())
    with pytest.raises(EdgeloopError, match="no device"):
        pki.revoke_device("dev-1")


def test_upload_tokens_name_one_fleet_and_device() -> None:
    secret = tokens.new_upload_secret()
    t = tokens.upload_token(secret, "lab", "dev-1")
    assert tokens.upload_token_ok(secret, "lab", "dev-1", t)
    assert not tokens.upload_token_ok(secret, "lab", "dev-2", t)
    assert not tokens.upload_token_ok(secret, "other", "dev-1", t)
    assert not tokens.upload_token_ok(tokens.new_upload_secret(), "lab", "dev-1", t)
    assert not tokens.upload_token_ok(secret, "lab", "dev-1", t[:-1])
    assert not tokens.upload_token_ok(secret, "lab", "dev-1", "ü" + t[1:])  # non-ASCII: unequal, no TypeError
    with pytest.raises(EdgeloopError):
        tokens.upload_token(secret, "lab\0dev", "1")  # no separator smuggled into the MAC input


def test_api_token_file_is_created_once_0600(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "api-token"
    token, created = tokens.load_or_create_token(path)
    assert created and _mode(path) == 0o600 and len(token) >= 40
    assert tokens.load_or_create_token(path) == (token, False)
    path.write_text("short\n")
    with pytest.raises(EdgeloopError, match="at least 16"):
        tokens.read_token(path)


def test_host_broker_tls_settings_fail_early_with_what_to_fix(pki: Pki, tmp_path: Path) -> None:
    cert, key = pki.services / "edgeloop-host.crt", pki.services / "edgeloop-host.key"
    s = broker_settings("mqtts://127.0.0.1:8884", BrokerTls(str(pki.ca_cert), str(cert), str(key)))
    assert (s.tls, s.port, s.ca_file, s.cert_file, s.key_file) == (True, 8884, str(pki.ca_cert), str(cert), str(key))
    assert broker_settings("mqtt://127.0.0.1:1883").tls is False
    with pytest.raises(EdgeloopError, match="need an mqtts://"):
        broker_settings("mqtt://127.0.0.1:1883", BrokerTls(str(pki.ca_cert)))
    with pytest.raises(EdgeloopError, match="go together"):
        broker_settings("mqtts://h", BrokerTls(str(pki.ca_cert), str(cert)))
    with pytest.raises(EdgeloopError, match="no such file"):
        broker_settings("mqtts://h", BrokerTls(str(tmp_path / "nope.crt")))
    os.environ["EDGELOOP_BROKER_CA"] = str(pki.ca_cert)
    try:
        assert BrokerTls.from_env().ca_file == str(pki.ca_cert)
        assert BrokerTls.from_env(ca="x").ca_file == "x"  # the option wins
    finally:
        del os.environ["EDGELOOP_BROKER_CA"]


def test_certs_cli_init_device_service_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "pki")
    assert main(["certs", "init", "--out", out, "--broker-host", "127.0.0.1", "--dns", "localhost", "--json"]) == 0
    init = json.loads(capsys.readouterr().out)
    assert init["sans"] == ["127.0.0.1", "localhost"] and Path(init["host_key"]).is_file()
    assert main(["certs", "device", "jetson-1", "--fleet", "warehouse", "--out", out, "--json"]) == 0
    dev = json.loads(capsys.readouterr().out)
    token = Path(dev["upload_token"]).read_text().strip()
    secret = tokens.load_upload_secret(Path(init["upload_secret"]))
    assert tokens.upload_token_ok(secret, "warehouse", "jetson-1", token)
    assert main(["certs", "device", "jetson-1", "--fleet", "warehouse", "--out", out]) == 0
    assert "[broker.tls]" in capsys.readouterr().out  # the agent.toml lines to use
    assert main(["certs", "service", "edgeloop-host-2", "--out", out]) == 0
    assert main(["certs", "service", "jetson-2", "--out", out]) == 2  # services are edgeloop-*
    assert main(["certs", "device", "edgeloop-x", "--fleet", "warehouse", "--out", out]) == 2
    assert main(["certs", "revoke", "jetson-1", "--out", out, "--json"]) == 0
    capsys.readouterr()
    assert main(["certs", "acl", "--out", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["devices"] == []
    assert main(["certs", "device", "d", "--fleet", "f", "--out", str(tmp_path / "empty")]) == 2  # no CA yet


def test_make_certs_script_calls_the_cli(tmp_path: Path) -> None:
    edgeloop = Path(sys.executable).parent / "edgeloop"
    if not edgeloop.exists():
        pytest.skip("the edgeloop console script is not installed in this environment")
    env = {**os.environ, "EDGELOOP": str(edgeloop), "EDGELOOP_CERT_SANS": "10.1.2.3 mqtt.lan"}
    done = subprocess.run(
        [str(REPO / "deploy" / "mosquitto" / "make-certs.sh"), str(tmp_path / "pki"), "127.0.0.1", "lab", "d1", "d2"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pki = Pki(tmp_path / "pki")
    assert [d for d, _, _ in pki.device_certs()] == ["d1", "d2"]
    san = _cert(pki.broker_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.lan"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(a) for a in ("127.0.0.1", "10.1.2.3")]
    assert acl.device_lines("d1", "lab")[0] == "user d1"


def test_deploys_agent_toml_takes_a_device_bundle(pki: Pki, keys: tuple[Path, Path], tmp_path: Path) -> None:
    """deploy/agent.toml with its /etc and /var paths pointed at a `certs device` bundle: TLS and upload token."""
    from device.config import load_config

    bundle = pki.devices / "dev-a"
    (tmp_path / "eval").mkdir()
    text = (REPO / "deploy" / "agent.toml").read_text()
    text = text.replace("/etc/edgeloop/tls/", f"{bundle}/").replace("/etc/edgeloop/release.pub", str(keys[1]))
    text = text.replace("/var/lib/edgeloop/eval", str(tmp_path / "eval")).replace("/var/lib/edgeloop", str(tmp_path))
    (tmp_path / "agent.toml").write_text(text)
    cfg = load_config(tmp_path / "agent.toml")
    s = cfg.broker.settings()
    assert (s.tls, s.cert_file, s.key_file, s.ca_file) == (
        True, str(bundle / "device.crt"), str(bundle / "device.key"), str(bundle / "ca.crt")
    )  # fmt: skip
    assert cfg.upload_credential() == (bundle / "upload.token").read_text().strip()
    (tmp_path / "agent.toml").write_text(text.replace(str(bundle / "upload.token"), str(tmp_path / "missing")))
    with pytest.raises(EdgeloopError, match="upload_token_file"):
        load_config(tmp_path / "agent.toml")
