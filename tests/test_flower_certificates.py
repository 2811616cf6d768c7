"""poisonlab.flower.certificates: a CA, a SuperLink certificate and node key pairs in the formats Flower reads.

Checks: the server certificate is signed by the CA and names every host plus loopback; node keys load with
the loaders flwr uses (OpenSSH EC private key, OpenSSH public key on a NIST curve); every file is 0600;
existing files are never replaced unless forced; bad hosts/counts are one-line errors; the CLI writes a set.
"""

from __future__ import annotations

import ipaddress
import stat

import pytest

pytest.importorskip("cryptography")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key  # noqa: E402

from poisonlab.errors import ConfigError  # noqa: E402
from poisonlab.flower.certificates import main, make_certificates  # noqa: E402


def test_a_set_has_a_signed_server_certificate_and_node_keys_flower_can_load(tmp_path):
    certs = make_certificates(tmp_path / "c", ["10.1.2.3", "superlink.lab"], nodes=2)
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"superlink.lab", "localhost"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(a) for a in
                                                              ("10.1.2.3", "127.0.0.1", "::1")}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for i in range(2):
        private = load_ssh_private_key(certs.node_key(i).read_bytes(), None)
        public = load_ssh_public_key(certs.node_public_key(i).read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(public.curve, ec.SECP384R1)
        assert private.public_key().public_numbers() == public.public_numbers()
    assert certs.node_public_key(0).read_bytes() != certs.node_public_key(1).read_bytes()
    files = sorted(p.name for p in certs.directory.iterdir())
    assert files == ["ca.crt", "ca.key", "node-0.key", "node-0.pub", "node-1.key", "node-1.pub", "server.crt",
                     "server.key"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in certs.directory.iterdir()} == {0o600}


def test_existing_files_are_kept_unless_forced(tmp_path):
    certs = make_certificates(tmp_path, nodes=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match="ca.key exists .*force=True"):
        make_certificates(tmp_path, nodes=1)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    make_certificates(tmp_path, nodes=1, force=True)
    assert certs.ca_cert.read_bytes() != before["ca.crt"]
    assert stat.S_IMODE(certs.node_key(0).stat().st_mode) == 0o600


@pytest.mark.parametrize("kwargs, match", [({"hosts": ["http://x:9092"]}, "host 'http://x:9092' is not a DNS name"),
                                           ({"hosts": ["a b"]}, "host 'a b'"),
                                           ({"nodes": -1}, "nodes=-1"),
                                           ({"days": 0}, "days=0")])
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_certificates(tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_writes_a_set_and_refuses_to_overwrite(tmp_path, capsys):
    assert main([str(tmp_path), "--hosts", "192.168.0.7", "--nodes", "3"]) == 0
    assert "192.168.0.7, localhost, 127.0.0.1, ::1" in capsys.readouterr().out
    assert (tmp_path / "node-2.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[0]
