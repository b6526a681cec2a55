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
# As a company directory is usually set up: a password can be bound with, never read.
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


@contextmanager
def running_slapd(users: Mapping[str, str], timeout: float = 20) -> Iterator[Slapd]:
    """slapd serving ``users`` (uid -> password) on a free loopback port, killed afterwards."""
    top = Path(tempfile.mkdtemp(prefix="callrec-slapd-"))
    try:
        (top / "data").mkdir()
        conf = top / "slapd.conf"
        conf.write_text(_CONF.format(dir=top, base=BASE, root=ROOT_DN, root_password=ssha(ROOT_PASSWORD)))
        (top / "data.ldif").write_text(_ldif(users))
        subprocess.run(
            [SLAPADD, "-q", "-f", str(conf), "-l", str(top / "data.ldif")], check=True, capture_output=True
        )
        url = f"ldap://127.0.0.1:{free_port()}"
        log = (top / "slapd.log").open("wb")
        proc = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(conf), "-h", f"{url}/"], stdout=log, stderr=subprocess.STDOUT
        )
        server = Slapd(url, proc, top)
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
