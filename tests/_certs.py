"""
Test certificates, made at test time with C{cryptography}: a CA, a server
certificate it signs (for C{localhost}, C{127.0.0.1} and C{::1}), a client
certificate it signs, and a second CA that signs nothing trusted (for
"untrusted issuer" tests).

    pki = testPKI()
    serverOptions = pki.serverOptions()
    clientOptions = pki.clientOptions("localhost")

The keys are small EC keys, so making them is fast; L{testPKI} makes them
once per test run.
"""

from __future__ import annotations

import datetime
import ipaddress
from functools import lru_cache

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)

__all__ = ["TestPKI", "testPKI"]

_ONE_DAY = datetime.timedelta(days=1)


def _name(common: str) -> x509.Name:
    """
    A subject name with C{common} as its common name.
    """
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tcpext tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _pem(cert: x509.Certificate) -> bytes:
    """
    A certificate as PEM.
    """
    return cert.public_bytes(serialization.Encoding.PEM)


def _keyPem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """
    A private key as unencrypted PEM.
    """
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _makeCA(common: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    A self-signed CA certificate and its key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + 30 * _ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _makeLeaf(
    common: str,
    names: list[str],
    addresses: list[str],
    usage: x509.ObjectIdentifier,
    ca: x509.Certificate,
    caKey: ec.EllipticCurvePrivateKey,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    A certificate signed by C{ca} for the given DNS names and IP addresses.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    alternatives: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alternatives += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + 30 * _ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()),
            critical=False,
        )
    )
    if alternatives:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternatives), critical=False
        )
    return builder.sign(caKey, hashes.SHA256()), key


@frozen
class TestPKI:
    """
    The PEM texts of the test CA, server and client certificates, and
    helpers that make Twisted TLS options from them.
    """

    caPEM: bytes
    serverCertPEM: bytes
    serverKeyPEM: bytes
    clientCertPEM: bytes
    clientKeyPEM: bytes
    otherCAPEM: bytes
    otherServerCertPEM: bytes
    otherServerKeyPEM: bytes

    def caCertificate(self) -> Certificate:
        """
        The trusted test CA, as a Twisted L{Certificate} (a trust root).
        """
        return Certificate.loadPEM(self.caPEM)

    def serverCertificate(self) -> PrivateCertificate:
        """
        The server certificate with its key.
        """
        return PrivateCertificate.loadPEM(self.serverCertPEM + self.serverKeyPEM)

    def clientCertificate(self) -> PrivateCertificate:
        """
        The client certificate with its key.
        """
        return PrivateCertificate.loadPEM(self.clientCertPEM + self.clientKeyPEM)

    def serverOptions(
        self, requireClientCertificate: bool = False
    ) -> CertificateOptions:
        """
        Server TLS options with the server certificate (signed by the test CA),
        optionally requiring a client certificate signed by the test CA.
        """
        cert = self.serverCertificate()
        if requireClientCertificate:
            return CertificateOptions(
                privateKey=cert.privateKey.original,
                certificate=cert.original,
                verify=True,
                caCerts=[self.caCertificate().original],
                requireCertificate=True,
            )
        return cert.options()

    def untrustedServerOptions(self) -> CertificateOptions:
        """
        Server TLS options with a certificate for C{localhost} signed by the
        other (untrusted) CA.
        """
        return PrivateCertificate.loadPEM(
            self.otherServerCertPEM + self.otherServerKeyPEM
        ).options()

    def clientOptions(
        self, hostname: str = "localhost", withClientCertificate: bool = False
    ) -> object:
        """
        Client TLS options that trust the test CA and verify C{hostname}.
        """
        client = self.clientCertificate() if withClientCertificate else None
        return optionsForClientTLS(
            hostname,
            trustRoot=trustRootFromCertificates([self.caCertificate()]),
            clientCertificate=client,
        )

    def otherTrustClientOptions(self, hostname: str = "localhost") -> object:
        """
        Client TLS options that trust only the other CA (so the test server
        certificate is from an untrusted issuer).
        """
        return optionsForClientTLS(
            hostname,
            trustRoot=trustRootFromCertificates([Certificate.loadPEM(self.otherCAPEM)]),
        )


@lru_cache(maxsize=1)
def testPKI() -> TestPKI:
    """
    Make (once) and return the test certificates.
    """
    ca, caKey = _makeCA("tcpext test CA")
    server, serverKey = _makeLeaf(
        "localhost",
        ["localhost"],
        ["127.0.0.1", "::1"],
        ExtendedKeyUsageOID.SERVER_AUTH,
        ca,
        caKey,
    )
    client, clientKey = _makeLeaf(
        "tcpext test client", [], [], ExtendedKeyUsageOID.CLIENT_AUTH, ca, caKey
    )
    other, otherKey = _makeCA("tcpext untrusted CA")
    otherServer, otherServerKey = _makeLeaf(
        "localhost",
        ["localhost"],
        ["127.0.0.1"],
        ExtendedKeyUsageOID.SERVER_AUTH,
        other,
        otherKey,
    )
    return TestPKI(
        caPEM=_pem(ca),
        serverCertPEM=_pem(server),
        serverKeyPEM=_keyPem(serverKey),
        clientCertPEM=_pem(client),
        clientKeyPEM=_keyPem(clientKey),
        otherCAPEM=_pem(other),
        otherServerCertPEM=_pem(otherServer),
        otherServerKeyPEM=_keyPem(otherServerKey),
    )
