"""The ``[ldap]`` table: the company directory people with ``sign_in = directory`` sign in
against (docs/web.md#signing-in, docs/operations.md#directory-sign-in). Kept apart from the
bind itself (access/directory.py) so reading the config does not import ldap3."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from callrec.config_tables import ConfigError, Section, positive


@dataclass(frozen=True, slots=True)
class DirectorySettings:
    url: str
    """ldap://host[:port] or ldaps://host[:port]."""
    bind_dn: str | None = None
    """The DN bound as, with ``{username}`` for the (escaped) login name: OpenLDAP
    ``uid={username},ou=people,dc=example,dc=org``, Active Directory ``{username}@corp.example``."""
    search_base: str | None = None
    """Instead of ``bind_dn``: find the person's entry under this base with ``search_filter``,
    then bind as the DN found."""
    search_filter: str = "(uid={username})"
    search_dn: str | None = None
    """The account the search binds as (``None``: an anonymous search)."""
    search_password: str | None = field(default=None, repr=False)
    start_tls: bool = False
    """Upgrade an ldap:// connection with StartTLS before the password is sent."""
    ca_file: Path | None = None
    """The CA that signed the directory's certificate (``None``: the system's CAs)."""
    timeout: float = 5.0
    """Seconds for connecting and for each answer; beyond: "the directory cannot be reached"."""


def parse_ldap(section: Section) -> DirectorySettings | None:
    """``None`` when the table is absent: nobody signs in through a directory."""
    if not section.data:
        return None
    url = section.get("url", str)
    parts = urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f'{section.key("url")}: expected "ldap://host[:port]" or "ldaps://host[:port]"')
    bind_dn = section.get("bind_dn", str, "") or None
    search_base = section.get("search_base", str, "") or None
    if (bind_dn is None) == (search_base is None):
        raise ConfigError(f"{section.key('bind_dn')}: give either bind_dn or search_base")
    search_filter = section.get("search_filter", str, "(uid={username})")
    for key, template in (("bind_dn", bind_dn), ("search_filter", search_filter)):
        if template is not None and "{username}" not in template:
            raise ConfigError(f"{section.key(key)}: must contain {{username}}, e.g. uid={{username}}")
    search_dn = section.get("search_dn", str, "") or None
    search_password = section.secret("search_password") if search_dn else None
    start_tls = section.get("start_tls", bool, False)
    if start_tls and parts.scheme == "ldaps":
        raise ConfigError(f"{section.key('start_tls')}: an ldaps:// connection is encrypted already")
    ca_text = section.get("ca_file", str, "")
    ca_file = Path(ca_text) if ca_text else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"{section.key('ca_file')}: {ca_file} is not a readable file")
    timeout = positive(section, "timeout", 5.0)
    section.refuse_unknown()
    return DirectorySettings(
        url,
        bind_dn,
        search_base,
        search_filter,
        search_dn,
        search_password,
        start_tls,
        ca_file,
        timeout,
    )
