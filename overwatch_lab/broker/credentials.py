"""The scoped identities of the embedded broker, kept in the data directory.

``<credentials_dir>/`` (mode 0700) holds ``registry.json`` (every grant: name, role,
organisation, entities, NKey public key) and, per identity, ``{name}.nk`` (only the NKey seed:
what nats-py's ``nkeys_seed=``, nats.go's ``NkeyOptionFromSeed`` and the ``nats`` CLI's
``--nkey`` read) and ``{name}.json`` (the connection file handed to the device: URL, inbox
prefix, the seed file's path and the subjects it may use). Every file is 0600. The broker's
config holds only the public keys (``broker/permissions.py`` renders it).

Several processes may change the registry (the lab, ``overwatch-lab device ...``): each change
takes an exclusive ``flock`` on ``registry.lock`` and rewrites the file atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nkeys

from overwatch_lab.broker.permissions import ROLES, Grant, Role, permissions
from overwatch_lab.errors import ConfigError
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol import subjects as s

REGISTRY_NAME = "registry.json"
LOCK_NAME = "registry.lock"


def new_user_seed() -> str:
    """A fresh NKey user seed (``SU...``)."""
    seed: bytes = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    """The public key (``U...``) of an NKey user seed."""
    kp = nkeys.from_seed(bytearray(seed.encode()))
    try:
        return str(kp.public_key.decode())
    finally:
        kp.wipe()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, owner-only (0600)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class Credential:
    """One issued identity: its grant and where its files are.

    Attributes:
        grant: What the broker lets it do.
        seed_file: The NKey seed file (0600).
        file: The connection file for the holder (0600).
    """

    grant: Grant
    seed_file: Path
    file: Path

    @property
    def auth(self) -> NatsAuth:
        """How to connect as this identity (seed file and inbox prefix)."""
        return NatsAuth(nkey_seed_file=str(self.seed_file), inbox_prefix=self.grant.inbox_prefix)

    def row(self) -> dict[str, Any]:
        """A flat description (for ``device list``)."""
        g = self.grant
        return {
            "name": g.name,
            "role": g.role,
            "org_id": g.org_id,
            "entities": list(g.entities),
            "public_key": g.public_key,
            "file": str(self.file),
        }


class CredentialStore:
    """The registry of scoped identities in one folder (see the module docstring).

    Args:
        root: The folder (created 0700).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"<CredentialStore {self.root}>"

    @property
    def registry_path(self) -> Path:
        """``registry.json``."""
        return self.root / REGISTRY_NAME

    def _ensure_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_root()
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def grants(self) -> list[Grant]:
        """Every grant in the registry, by name.

        Raises:
            ConfigError: the registry exists but cannot be read (names the file).
        """
        try:
            raw = json.loads(self.registry_path.read_text())
            out = [
                Grant(
                    name=str(g["name"]),
                    role=_role(g["role"]),
                    public_key=str(g["public_key"]),
                    org_id=None if g.get("org_id") is None else str(g["org_id"]),
                    entities=tuple(str(e) for e in g.get("entities", ())),
                )
                for g in raw["grants"]
            ]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the credential registry {self.registry_path}: {exc!r}") from exc
        return sorted(out, key=lambda g: g.name)

    def credentials(self) -> list[Credential]:
        """Every issued identity."""
        return [self._credential(g) for g in self.grants()]

    def get(self, name: str) -> Credential | None:
        """The identity called ``name``, or None."""
        for g in self.grants():
            if g.name == name:
                return self._credential(g)
        return None

    def issue(
        self,
        name: str,
        role: Role,
        *,
        org_id: str | None = None,
        entities: tuple[str, ...] = (),
        nats_url: str | None = None,
        replace: bool = False,
    ) -> Credential:
        """Create (or, with ``replace``, renew) an identity and write its files.

        An existing identity with the same name, role, organisation and entities is returned as
        it is (its seed kept) unless ``replace``.

        Raises:
            ConfigError: a bad name, role or scope, or the name is taken by another scope.
        """
        s.check_token(name, "name")
        _role(role)
        if org_id is not None:
            s.check_token(org_id, "org_id")
        for e in entities:
            s.check_token(e, "entity_id")
        with self._locked():
            grants = {g.name: g for g in self.grants()}
            old = grants.get(name)
            if old is not None and not replace:
                if (old.role, old.org_id, old.entities) == (role, org_id, entities):
                    return self._credential(old)
                raise ConfigError(
                    f"an identity called {name!r} already exists ({old.role} of {old.org_id}); "
                    "revoke it first"
                )
            seed = new_user_seed()
            grant = Grant(name, role, public_key(seed), org_id, entities)
            try:
                permissions(grant)  # refuses an incomplete scope before anything is written
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            cred = self._credential(grant)
            write_private(cred.seed_file, seed + "\n")
            write_private(cred.file, json.dumps(self._connection_file(cred, nats_url), indent=2) + "\n")
            grants[name] = grant
            self._save(grants.values())
            return cred

    def revoke(self, name: str) -> Credential:
        """Remove an identity from the registry and delete its files.

        Raises:
            ConfigError: there is no identity called ``name``.
        """
        with self._locked():
            grants = {g.name: g for g in self.grants()}
            grant = grants.pop(name, None)
            if grant is None:
                raise ConfigError(f"no identity called {name!r} (see `overwatch-lab device list`)")
            self._save(grants.values())
        cred = self._credential(grant)
        for path in (cred.seed_file, cred.file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return cred

    # ------------------------------------------------------------------ internals
    def _credential(self, grant: Grant) -> Credential:
        return Credential(grant, self.root / f"{grant.name}.nk", self.root / f"{grant.name}.json")

    def _save(self, grants: Any) -> None:
        body = {"grants": [asdict(g) | {"entities": list(g.entities)} for g in sorted(grants, key=lambda g: g.name)]}
        write_private(self.registry_path, json.dumps(body, indent=2) + "\n")

    @staticmethod
    def _connection_file(cred: Credential, nats_url: str | None) -> dict[str, Any]:
        g, perms = cred.grant, permissions(cred.grant)
        return {
            "role": g.role,
            "name": g.name,
            "org_id": g.org_id,
            "entities": list(g.entities),
            "nats_url": nats_url,
            "auth": cred.auth.to_dict(),
            "publish": list(perms.publish),
            "subscribe": list(perms.subscribe),
        }


def _role(value: object) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise ConfigError(f"unknown role {value!r}; expected one of {', '.join(ROLES)}")
