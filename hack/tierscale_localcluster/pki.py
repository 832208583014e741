"""Certificates and keys for the local control plane, generated once at first start.

One self-signed CA signs the API server's serving certificate and a single admin client
certificate (``O=system:masters``) that the controller manager, scheduler, kwok, the kubelet
stand-in and the tests use. A separate RSA key pair signs ServiceAccount tokens.

Known shortcoming: every local component shares the admin identity, so the Node authorizer
and per-component RBAC of a real cluster are not exercised here; RBAC for ServiceAccounts is.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)
API_SERVER_DNS_NAMES = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
]
API_SERVER_IPS = ["127.0.0.1", "10.0.0.1"]  # loopback, and the first address of the service range


def ensure_pki(pki_dir: Path) -> None:
    """Writes ca.crt/key, apiserver.crt/key, admin.crt/key and sa.key/pub unless they exist."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    if (pki_dir / "complete").exists():
        return

    ca_key = _new_key()
    ca_cert = _certificate(
        subject=_name("tierscale-local-ca"),
        issuer=_name("tierscale-local-ca"),
        public_key=ca_key.public_key(),
        signing_key=ca_key,
        is_ca=True,
    )
    _write(pki_dir, "ca", ca_cert, ca_key)

    server_key = _new_key()
    server_cert = _certificate(
        subject=_name("kube-apiserver"),
        issuer=ca_cert.subject,
        public_key=server_key.public_key(),
        signing_key=ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt_names=[x509.DNSName(n) for n in API_SERVER_DNS_NAMES]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in API_SERVER_IPS],
    )
    _write(pki_dir, "apiserver", server_cert, server_key)

    admin_key = _new_key()
    admin_cert = _certificate(
        subject=_name("kubernetes-admin", organization="system:masters"),
        issuer=ca_cert.subject,
        public_key=admin_key.public_key(),
        signing_key=ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    _write(pki_dir, "admin", admin_cert, admin_key)

    sa_key = _new_key()
    (pki_dir / "sa.key").write_bytes(_private_pem(sa_key))
    (pki_dir / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (pki_dir / "complete").touch()


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _certificate(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key,
    signing_key: rsa.RSAPrivateKey,
    is_ca: bool = False,
    usage=None,
    alt_names: list | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, key_cert_sign=False,
                crl_sign=False, content_commitment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write(pki_dir: Path, stem: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
    (pki_dir / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = pki_dir / f"{stem}.key"
    key_path.write_bytes(_private_pem(key))
    key_path.chmod(0o600)
