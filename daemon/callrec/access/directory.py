"""Signing in through the company directory: an LDAP simple bind (OpenLDAP, Active Directory)
as the person, with the password they typed (docs/web.md#signing-in).

The directory only says "this password is theirs". Who the person is in callrec (role, team,
agent id) is the users table's: a name the directory knows but callrec does not is refused.
ldap3 blocks, so each sign-in runs in a worker thread, bounded by ``[ldap] timeout``. The name
is escaped for the DN (RFC 4514) and for the search filter (RFC 4515): a name like
``*)(uid=*`` matches nothing but itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import warnings
from typing import Any, Literal

import structlog
from prometheus_client import Counter

with warnings.catch_warnings():
    # ldap3 2.9.1 (its latest release) reads pyasn1's old names tagMap/typeMap, which pyasn1
    # 0.6 deprecates with a warning at import; the names still work.
    warnings.filterwarnings("ignore", r"(tag|type)Map is deprecated", DeprecationWarning)
    import ldap3
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import escape_rdn

from callrec.access.directory_settings import DirectorySettings
from callrec.ops import metrics

log = structlog.get_logger("callrec.directory")

Outcome = Literal["ok", "refused", "unreachable"]

BINDS = Counter(
    "callrec_directory_sign_ins",
    "Sign-ins checked against the [ldap] directory, by outcome (ok, refused, unreachable).",
    ["outcome"],
    registry=metrics.REGISTRY,
)
_INVALID_CREDENTIALS = 49  # RFC 4511 resultCode


class Unreachable(Exception):
    """The directory did not answer, or not as a directory should; the reason, for the log."""


async def check(settings: DirectorySettings, username: str, password: str) -> Outcome:
    """Whether ``password`` is ``username``'s in the directory; counted and, when the directory
    cannot be reached, logged."""
    # An empty password is an "unauthenticated bind" (RFC 4513 5.1.2), which a server may
    # answer with success: never ask.
    if not password or not username:
        outcome: Outcome = "refused"
    else:
        try:
            # The thread's own timeouts cover connect and each answer; this bounds the sum.
            ok = await asyncio.wait_for(
                asyncio.to_thread(_bind, settings, username, password), settings.timeout * 4
            )
            outcome = "ok" if ok else "refused"
        except Exception as exc:  # ldap3 raises more than LDAPException: never a 500 for it
            log.error("the directory cannot be reached", url=settings.url, error=_reason(exc))
            outcome = "unreachable"
    BINDS.labels(outcome=outcome).inc()
    return outcome


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200] if str(exc) else type(exc).__name__


def _bind(settings: DirectorySettings, username: str, password: str) -> bool:
    server = _server(settings)
    if settings.search_base is not None:
        dn = _find(settings, server, username)
        if dn is None:
            return False
    else:
        assert settings.bind_dn is not None
        dn = settings.bind_dn.replace("{username}", escape_rdn(username))
    conn = _open(settings, server, dn, password)
    try:
        if conn.bind():
            return True
        if conn.result.get("result") == _INVALID_CREDENTIALS:
            return False
        raise Unreachable(f"bind answered {conn.result.get('description')}")
    finally:
        close(conn)


def _find(settings: DirectorySettings, server: ldap3.Server, username: str) -> str | None:
    """The DN of the one entry the search filter finds for ``username``; ``None`` if none or
    several (an ambiguous name signs no one in)."""
    assert settings.search_base is not None
    conn = _open(settings, server, settings.search_dn, settings.search_password)
    try:
        if settings.search_dn is not None and not conn.bind():
            raise Unreachable(f"the search account was refused: {conn.result.get('description')}")
        found = conn.search(
            settings.search_base,
            settings.search_filter.replace("{username}", escape_filter_chars(username)),
            attributes=[],
            size_limit=2,
            time_limit=max(1, int(settings.timeout)),
        )
        code = conn.result.get("result")
        if not found and code not in (0, 4, 32):  # success, sizeLimitExceeded, noSuchObject
            raise Unreachable(f"search answered {conn.result.get('description')}")
        entries = [e["dn"] for e in conn.response or [] if e.get("type") == "searchResEntry"]
        return entries[0] if len(entries) == 1 and code == 0 else None
    finally:
        close(conn)


class _Tls(ldap3.Tls):  # type: ignore[misc]  # ldap3 has no type information
    """TLS as the standard library does it: the certificate and its host name verified in the
    handshake (ssl.create_default_context). ldap3's own name check uses the deprecated
    ssl.match_hostname and, when it fails, drops the socket without closing it."""

    def __init__(self, ca_file: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        self.context = ssl.create_default_context(cafile=ca_file)

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        # A failed handshake closes the new socket and raises: ldap3 reports it as a
        # connection error (ldaps) or a StartTLS error, both "unreachable" here.
        connection.socket = self.context.wrap_socket(
            connection.socket, server_hostname=connection.server.host, do_handshake_on_connect=True
        )


def _server(settings: DirectorySettings) -> ldap3.Server:
    tls = _Tls(str(settings.ca_file) if settings.ca_file else None)
    return ldap3.Server(settings.url, connect_timeout=settings.timeout, tls=tls, get_info=ldap3.NONE)


def _open(settings: DirectorySettings, server: ldap3.Server, user: str | None, password: str | None) -> Any:
    conn = ldap3.Connection(
        server,
        user=user,
        password=password,
        # Whole seconds: ldap3 packs it into SO_RCVTIMEO as an integer.
        receive_timeout=max(1, math.ceil(settings.timeout)),
        raise_exceptions=False,
        read_only=True,
        auto_referrals=False,
    )
    try:
        conn.open()
        if settings.start_tls and not conn.start_tls():
            raise Unreachable(f"StartTLS refused: {conn.result.get('description')}")
        # Never a password over plain TCP when TLS was asked for, whatever ldap3 reported.
        if (settings.start_tls or server.ssl) and not isinstance(conn.socket, ssl.SSLSocket):
            raise Unreachable("the connection is not encrypted although TLS was asked for")
    except BaseException:
        close(conn)
        raise
    return conn


def close(conn: Any) -> None:
    """Unbind, and close the socket even when opening it failed (ldap3 leaves it open then)."""
    # After a failed handshake the socket is gone: the unbind cannot be sent, and its error
    # must not replace the one that says why.
    with contextlib.suppress(Exception):
        conn.unbind()
    if conn.socket is not None:
        conn.socket.close()
