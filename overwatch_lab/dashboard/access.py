"""Who may see and who may command through the dashboard: users, roles, loopback.

Served on loopback (127.0.0.1, the default) the dashboard needs no login and its one local
user is an operator. Served beyond loopback it refuses to start without authentication
(:func:`check_exposure`): Panel's basic auth with a users file, and a cookie secret. Each user
has a role:

- ``viewer``: sees everything, sends nothing;
- ``operator``: may also send commands.

The users file is JSON, one entry per user::

    {"alice": {"password": "…", "role": "operator"},
     "bob":   {"password": "…", "role": "viewer"},
     "carol": "…"}                                    # a bare password: a viewer

Passwords stay in the server process: they are never written to the page or the log (errors
name the user and the field, never the value).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overwatch_lab.errors import ConfigError

VIEWER = "viewer"
OPERATOR = "operator"
ROLES: tuple[str, ...] = (VIEWER, OPERATOR)
COMMANDING_ROLES = frozenset({OPERATOR})
"""Roles that may send commands."""

LOCAL_USER = "local"
"""The user of a loopback dashboard served without authentication (an operator)."""


def is_loopback(address: str) -> bool:
    """True when ``address`` (an interface to listen on) is reachable only from this machine."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:  # a host name, "" or "0.0.0.0"-like wildcard spelled otherwise: not loopback
        return False


def can_command(role: str | None) -> bool:
    """True when ``role`` may send commands."""
    return role in COMMANDING_ROLES


@dataclass(frozen=True)
class Users:
    """The dashboard's users: name -> password and name -> role."""

    passwords: Mapping[str, str] = field(repr=False)
    roles: Mapping[str, str]

    def role_of(self, user: str | None) -> str | None:
        """The role of ``user`` (None: unknown user)."""
        return None if user is None else self.roles.get(user)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, origin: str = "users") -> Users:
        """Build from ``{"name": {"password": ..., "role": ...} | "password"}``; ConfigError if malformed."""
        if not isinstance(data, Mapping) or not data:
            raise ConfigError(f"{origin}: expected a JSON object of users, got {type(data).__name__}")
        passwords: dict[str, str] = {}
        roles: dict[str, str] = {}
        for name, entry in data.items():
            password: Any
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"{origin}: a user name must be a non-empty string")
            if isinstance(entry, str):
                password, role = entry, VIEWER
            elif isinstance(entry, Mapping):
                password, role = entry.get("password"), entry.get("role", VIEWER)
            else:
                raise ConfigError(f"{origin}: user {name!r}: expected a password or an object")
            if not isinstance(password, str) or len(password) < 8:
                raise ConfigError(
                    f"{origin}: user {name!r}: the password must be a string of 8 or more characters"
                )
            if role not in ROLES:
                raise ConfigError(
                    f"{origin}: user {name!r}: role must be one of {', '.join(ROLES)}, got {role!r}"
                )
            passwords[name], roles[name] = password, role
        return cls(passwords=passwords, roles=roles)

    @classmethod
    def load(cls, path: str | Path) -> Users:
        """Read a users file (see the module docstring); ConfigError when missing or malformed."""
        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"dashboard users file {p} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the dashboard users file {p}: {exc}") from None
        except json.JSONDecodeError as exc:  # the message quotes no content, only the position
            raise ConfigError(
                f"dashboard users file {p} is not JSON (line {exc.lineno}, column {exc.colno})"
            ) from None
        return cls.from_mapping(data, origin=str(p))


def check_exposure(address: str, users: Users | None, *, beyond_loopback: bool | None = None) -> bool:
    """Refuse to serve beyond loopback without users; return True when a login is required.

    Args:
        address: the interface the server will listen on.
        users: who may log in (None: no authentication).
        beyond_loopback: force the decision (True: treat as reachable from elsewhere, for
            tests and for a loopback port forwarded outward); None: from ``address``.

    Raises:
        ConfigError: reachable from elsewhere and no users given.
    """
    exposed = not is_loopback(address) if beyond_loopback is None else beyond_loopback
    if exposed and users is None:
        raise ConfigError(
            f"refusing to serve the dashboard on {address or 'every interface'} without authentication: "
            "give a users file (--dashboard-users FILE, JSON of name -> {password, role}) or serve on 127.0.0.1"
        )
    return users is not None


def cookie_secret(given: str | None = None) -> str:
    """The secret signing the login cookie: ``given``, else a fresh random one (logins last one server run)."""
    if given is not None:
        if len(given) < 16:
            raise ConfigError("the dashboard cookie secret must be 16 or more characters")
        return given
    return secrets.token_urlsafe(32)
