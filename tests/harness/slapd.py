"""A throwaway OpenLDAP server (Debian's ``slapd``) for the directory sign-in tests
(docs/testing.md#a-throwaway-openldap).

Its own temporary directory and free port; a slapd.conf with the mdb backend, base
dc=example,dc=org, loaded offline with ``slapadd`` (so no ldap-utils are needed), users under
ou=people with salted SHA passwords. Started in the foreground (``-d 0``: slapd does not fork),
so the process we hold is the server and killing it is the cleanup. Ready when a bind as the
root DN succeeds, polled until a deadline.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from callrec.access.directory import close, ldap3  # ldap3 imported there with its pyasn1 warning silenced
from tests.harness.asterisk import free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
BASE = "dc=example,dc=org"
PEOPLE = f"ou=people,{BASE}"
ROOT_DN, ROOT_PASSWORD = f"cn=admin,{BASE}", "root-secret-of-the-test"

_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
database mdb
maxsize 16777216
suffix "{base}"
rootdn "{root}"
rootpw {root_password}
directory {dir}/data
{tls}# As a company directory is usually set up: a password can be bound with, never read.
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""


def available() -> bool:
    return os.access(SLAPD, os.X_OK) and os.access(SLAPADD, os.X_OK)


def ssha(password: str) -> str:
    """RFC 2307 {SSHA}: what slapd stores for a password set with slappasswd."""
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


@dataclass
class Slapd:
    url: str
    proc: subprocess.Popen[bytes]
    directory: Path
    ldaps_url: str | None = None
    """With ``tls``: the same server over TLS, its certificate for ``localhost`` only."""

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def user_dn(self, uid: str) -> str:
        return f"uid={uid},{PEOPLE}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _ldif(users: Mapping[str, str]) -> str:
    entries = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
    ]
    for uid, password in users.items():
        entries.append(
            f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
            f"userPassword: {ssha(password)}\n"
        )
    return "\n".join(entries)


def _bind_ok(url: str) -> bool:
    conn = ldap3.Connection(
        ldap3.Server(url, connect_timeout=1, get_info=ldap3.NONE), ROOT_DN, ROOT_PASSWORD, receive_timeout=1
    )
    try:
        return bool(conn.bind())
    except ldap3.core.exceptions.LDAPException:
        return False
    finally:
        close(conn)


def _certificates(top: Path) -> str:
    """A CA and a server certificate it signed, for the DNS name localhost only: the slapd.conf
    lines that use them (StartTLS on ldap://, and ldaps://)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder(
            issuer_name=name("callrec test CA"),
            subject_name=name("callrec test CA"),
            public_key=ca_key.public_key(),
        )
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder(
            issuer_name=ca.subject, subject_name=name("localhost"), public_key=key.public_key()
        )
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (top / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (top / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (top / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return (
        f"TLSCACertificateFile {top}/ca.pem\nTLSCertificateFile {top}/server.pem\n"
        f"TLSCertificateKeyFile {top}/server.key\n"
    )


@contextmanager
def running_slapd(users: Mapping[str, str], *, tls: bool = False, timeout: float = 20) -> Iterator[Slapd]:
    """slapd serving ``users`` (uid -> password) on a free loopback port, killed afterwards;
    ``tls``: with a certificate, StartTLS and a second, ldaps:// port."""
    top = Path(tempfile.mkdtemp(prefix="callrec-slapd-"))
    try:
        (top / "data").mkdir()
        conf = top / "slapd.conf"
        certificates = _certificates(top) if tls else ""
        conf.write_text(
            _CONF.format(
                dir=top, base=BASE, root=ROOT_DN, root_password=ssha(ROOT_PASSWORD), tls=certificates
            )
        )
        (top / "data.ldif").write_text(_ldif(users))
        subprocess.run(
            [SLAPADD, "-q", "-f", str(conf), "-l", str(top / "data.ldif")], check=True, capture_output=True
        )
        url = f"ldap://127.0.0.1:{free_port()}"
        ldaps = f"ldaps://localhost:{free_port()}" if tls else None
        listen = f"{url}/" + (f" ldaps://127.0.0.1:{ldaps.rsplit(':', 1)[1]}/" if ldaps else "")
        log = (top / "slapd.log").open("wb")
        proc = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(conf), "-h", listen], stdout=log, stderr=subprocess.STDOUT
        )
        server = Slapd(url, proc, top, ldaps)
        try:
            deadline = time.monotonic() + timeout
            while not _bind_ok(url):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"slapd did not answer a bind within {timeout} s")
                try:
                    # Between two attempts (a refused connection returns at once: do not spin),
                    # and the way to notice that slapd gave up.
                    proc.wait(0.02)
                except subprocess.TimeoutExpired:
                    continue
                raise RuntimeError(f"slapd exited {proc.returncode}: {(top / 'slapd.log').read_text()}")
            yield server
        finally:
            server.stop()
            log.close()
    finally:
        shutil.rmtree(top, ignore_errors=True)
