"""How one NATS client authenticates: a token, a user and password, an NKey seed file or a
``.creds`` file, and the inbox prefix a scoped identity must use.

One small, picklable value that travels wherever a connection is made (the lab, its worker
processes, simulator processes, benchmarks), instead of a token string alone. Its ``repr``
never shows a secret. :meth:`NatsAuth.kwargs` gives the keyword arguments of
``nats.connect``; ``overwatch_lab.broker.connect.connect`` takes it as ``auth=``.

A scoped identity of the embedded broker (a device, relay, observer or operator: see
``broker/permissions.py``) may subscribe only to its own inbox prefix, so its ``inbox_prefix``
must be passed to the client (nats-py ``inbox_prefix=``); ``kwargs()`` does.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from overwatch_lab.errors import ConfigError

AUTH_ENV = "OVERWATCH_LAB_NATS_AUTH"
"""Environment variable through which a benchmark hands its credentials (JSON) to a child process
(the environment, unlike the command line, is not readable by other local users)."""


@dataclass(frozen=True, slots=True, repr=False)
class NatsAuth:
    """Credentials of one NATS client (any combination the server accepts; usually one kind).

    Attributes:
        token: Token (``auth_token``).
        user / password: User and password.
        nkey_seed_file: Path of a file holding only an NKey user seed (``SU...``), read at each
            connect (nats-py ``nkeys_seed=``; the ``nkeys`` package signs the server's nonce).
        nkey_seed: The seed itself (nats-py ``nkeys_seed_str=``), e.g. given on a command line.
        creds: Path of a ``.creds`` file (user JWT and seed: decentralised auth).
        inbox_prefix: Prefix of the client's reply inboxes (``_INBOX`` when None).
    """

    token: str | None = None
    user: str | None = None
    password: str | None = None
    nkey_seed_file: str | None = None
    nkey_seed: str | None = None
    creds: str | None = None
    inbox_prefix: str | None = None

    def __repr__(self) -> str:
        shown = [f"user={self.user!r}"] if self.user else []
        shown += ["token=***"] if self.token else []
        shown += ["password=***"] if self.password else []
        shown += [f"nkey_seed_file={self.nkey_seed_file!r}"] if self.nkey_seed_file else []
        shown += ["nkey_seed=***"] if self.nkey_seed else []
        shown += [f"creds={self.creds!r}"] if self.creds else []
        shown += [f"inbox_prefix={self.inbox_prefix!r}"] if self.inbox_prefix else []
        return f"NatsAuth({', '.join(shown)})"

    @property
    def anonymous(self) -> bool:
        """True when no credential is set."""
        return not (
            self.token or self.user or self.password or self.nkey_seed_file or self.nkey_seed or self.creds
        )

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (only the ones that are set)."""
        out: dict[str, Any] = {}
        if self.token:
            out["token"] = self.token
        if self.user:
            out["user"] = self.user
        if self.password:
            out["password"] = self.password
        if self.nkey_seed_file:
            out["nkeys_seed"] = self.nkey_seed_file
        if self.nkey_seed:
            out["nkeys_seed_str"] = self.nkey_seed
        if self.creds:
            out["user_credentials"] = self.creds
        if self.inbox_prefix:
            out["inbox_prefix"] = self.inbox_prefix
        return out

    def to_dict(self) -> dict[str, str]:
        """The fields that are set (for a 0600 JSON file such as ``lab.json``)."""
        return {k: v for k, v in asdict(self).items() if v}

    @classmethod
    def from_dict(cls, raw: object, where: str = "credentials") -> NatsAuth:
        """Build from :meth:`to_dict`'s shape.

        Raises:
            ConfigError: not an object of string fields this class knows (names ``where``).
        """
        known = set(cls.__dataclass_fields__)
        if not isinstance(raw, dict) or not set(raw) <= known:
            raise ConfigError(f"{where}: expected an object with fields among {sorted(known)}, got {raw!r:.80}")
        if not all(isinstance(v, str) or v is None for v in raw.values()):
            raise ConfigError(f"{where}: every credential field must be a string")
        return cls(**raw)

    def env(self) -> dict[str, str]:
        """This process's environment plus :data:`AUTH_ENV` holding these credentials (for a child)."""
        return {**os.environ, AUTH_ENV: json.dumps(self.to_dict())}

    @classmethod
    def from_env(cls) -> NatsAuth:
        """The credentials a parent put in :data:`AUTH_ENV` (none when unset)."""
        return cls.from_dict(json.loads(os.environ.get(AUTH_ENV) or "{}"), AUTH_ENV)

    @classmethod
    def load(cls, path: str | Path) -> NatsAuth:
        """Read a credentials file written by ``overwatch-lab device add`` (its ``auth`` object).

        Raises:
            ConfigError: the file cannot be read or holds no ``auth`` object.
        """
        p = Path(path).expanduser()
        try:
            raw = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the credentials file {p}: {exc}") from exc
        if not isinstance(raw, dict) or "auth" not in raw:
            raise ConfigError(f"{p} is not an overwatch-lab credentials file (no 'auth' object)")
        return cls.from_dict(raw["auth"], str(p))
