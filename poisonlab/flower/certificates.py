"""Throw-away TLS certificates and node keys for a Flower deployment (local runs, tests, a first lab set-up).

    python -m poisonlab.flower.certificates certs/ --hosts 10.0.0.5 superlink.lab --nodes 4

writes into certs/ (every file mode 0600; an existing file is never replaced unless --force):

- ``ca.crt`` / ``ca.key``: a self-signed certificate authority (EC P-384);
- ``server.crt`` / ``server.key``: the SuperLink's certificate, signed by the CA, with subject alternative
  names for every given host (DNS name or IP address) plus ``localhost``, ``127.0.0.1`` and ``::1``;
  the SuperLink takes ``--ssl-ca-certfile ca.crt --ssl-certfile server.crt --ssl-keyfile server.key``, the
  SuperNodes ``--root-certificates ca.crt`` and the ``flwr`` CLI ``root-certificates = "ca.crt"``;
- ``node-<i>.key`` / ``node-<i>.pub`` for i = 0..nodes-1: an EC P-384 key pair in OpenSSH format, the
  format Flower's node authentication reads (``flower-supernode --auth-supernode-private-key node-0.key``;
  ``flwr supernode register node-0.pub`` allows that node on a SuperLink started with
  ``--enable-supernode-auth``); the same files ``ssh-keygen -t ecdsa -b 384 -N ''`` writes.

Source of the formats: Flower's guides "Enable TLS connections" and "Authenticate SuperNodes"
(flower.ai/docs/framework, v1.42) and flwr's own loaders (``load_ssh_private_key`` in
flwr/supernode/cli/flower_supernode.py, ``load_ssh_public_key`` + a NIST curve check in
flwr/cli/supernode/register.py). These are for throw-away use: a production CA keeps its key elsewhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from poisonlab.errors import ConfigError

LOOPBACK = ("localhost", "127.0.0.1", "::1")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class Certificates:
    """The paths of one set made by make_certificates (see the module docstring)."""

    directory: Path
    nodes: int

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def node_key(self, i: int) -> Path:
        """Node i's private key (OpenSSH)."""
        return self.directory / f"node-{i}.key"

    def node_public_key(self, i: int) -> Path:
        """Node i's public key (OpenSSH, one line)."""
        return self.directory / f"node-{i}.pub"


def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise ConfigError("making certificates needs the 'cryptography' package (installed with"
                          " poisonlab[flower]); accepted: pip install cryptography") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def check_hosts(hosts) -> list[str]:
    """The hosts, each a DNS name or an IP address (ConfigError naming a bad one), loopback names added."""
    out = []
    for host in [*hosts, *LOOPBACK]:
        host = str(host).strip()
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            if not _HOSTNAME.match(host):
                raise ConfigError(f"host {host!r} is not a DNS name or an IP address; accepted: e.g. superlink.lab,"
                                  " 10.0.0.5, ::1 (no port, no scheme)") from None
        if host not in out:
            out.append(host)
    return out


def _write(path: Path, data: bytes, force: bool) -> None:
    """Write data to path with mode 0600; an existing file only with force (atomically replaced then)."""
    if force:
        from poisonlab.rundir import atomic_write_bytes

        atomic_write_bytes(path, data, mode=0o600)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; accepted: a directory without it, or force=True (--force) to"
                          " replace it") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def make_certificates(directory: str | os.PathLike, hosts=(), nodes: int = 0, days: int = 30,
                      force: bool = False) -> Certificates:
    """Write a throw-away CA, a server certificate for hosts (plus loopback) and `nodes` node key pairs.

    Every file is checked to be absent before anything is written (force=True replaces them instead).
    """
    x509, hashes, serialization, ec, eku, name_oid = _crypto()
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 0:
        raise ConfigError(f"nodes={nodes!r} is invalid; accepted: an integer >= 0")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
        raise ConfigError(f"days={days!r} is invalid; accepted: an integer in [1, 3650]")
    names = check_hosts(hosts)
    certs = Certificates(Path(directory), nodes)
    paths = [certs.directory / "ca.key", certs.ca_cert, certs.server_key, certs.server_cert,
             *(p for i in range(nodes) for p in (certs.node_key(i), certs.node_public_key(i)))]
    if not force and (present := [str(p) for p in paths if p.exists()]):
        raise ConfigError(f"{present[0]} exists ({len(present)} of the files exist); accepted: a directory"
                          " without them, or force=True (--force) to replace them")
    certs.directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # tolerate a little clock skew
    pem = serialization.Encoding.PEM
    pkcs8, no_password = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, "poisonlab throw-away CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA384()))

    server_key = ec.generate_private_key(ec.SECP384R1())
    sans = [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in names]
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, names[0])]))
              .issuer_name(ca_name).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now)
              .not_valid_after(now + dt.timedelta(days=days))
              .add_extension(x509.SubjectAlternativeName(sans), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([eku.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA384()))

    _write(certs.directory / "ca.key", ca_key.private_bytes(pem, pkcs8, no_password), force)
    _write(certs.ca_cert, ca.public_bytes(pem), force)
    _write(certs.server_key, server_key.private_bytes(pem, pkcs8, no_password), force)
    _write(certs.server_cert, server.public_bytes(pem), force)
    for i in range(nodes):
        key = ec.generate_private_key(ec.SECP384R1())
        _write(certs.node_key(i), key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, no_password), force)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _write(certs.node_public_key(i), public + f" poisonlab-node-{i}\n".encode(), force)
    return certs


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m poisonlab.flower.certificates DIR --hosts ... --nodes N [--days D] [--force]``."""
    parser = argparse.ArgumentParser(prog="python -m poisonlab.flower.certificates",
                                     description="Write a throw-away CA, a SuperLink certificate and node key pairs"
                                                 " for a Flower deployment (files 0600).")
    parser.add_argument("directory", help="where to write ca.crt, server.crt/.key, node-<i>.key/.pub")
    parser.add_argument("--hosts", nargs="*", default=[],
                        help="DNS names / IP addresses the SuperLink is reached at (loopback is always added)")
    parser.add_argument("--nodes", type=int, default=0, help="node key pairs to make (default 0)")
    parser.add_argument("--days", type=int, default=30, help="validity in days (default 30)")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        certs = make_certificates(args.directory, args.hosts, args.nodes, args.days, args.force)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {certs.ca_cert}, {certs.server_cert} (hosts: {', '.join(check_hosts(args.hosts))})"
          f" and {args.nodes} node key pair(s) in {certs.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
