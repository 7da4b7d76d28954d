"""``overwatch-lab device add|relay|list|revoke``: the embedded broker's device credentials, from the shell.

Next to a running lab (``overwatch-lab up`` in the same data directory) these attach to it with
its internal identity (``lab.json``, readable by its owner only), register the entity through
the wire, write the credentials (0600, under ``<data_dir>/credentials``) and reload the broker.
``list`` needs no running lab.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overwatch_lab.broker.credentials import CredentialStore
from overwatch_lab.cli_flags import DATA_DIR_FLAG, add_config_flags
from overwatch_lab.config import default_data_dir
from overwatch_lab.nats_auth import NatsAuth
from overwatch_lab.protocol.entities import ENTITY_TYPES

if TYPE_CHECKING:
    from overwatch_lab.simulation import ScenarioLike

CREDENTIALS_DIR = "credentials"  # core/base.py's CREDENTIALS_DIR (a layer above: checked by a unit test)


def _data_dir(a: argparse.Namespace) -> Path:
    return Path(a.data_dir) if a.data_dir is not None else default_data_dir()


def _attach(a: argparse.Namespace) -> Any:
    from overwatch_lab.lab import Lab

    return Lab.attach(_data_dir(a), identity="internal")


@contextlib.contextmanager
def sim_relays(data_dir: Path, scenario: ScenarioLike) -> Iterator[tuple[str, Mapping[str, NatsAuth]] | None]:
    """``overwatch-lab sim`` against a lab: its fleet speaks as one relay per organisation.

    Attaches to the lab with its internal identity, registers the fleet and issues the relays
    (``lab.fleet.relays``, the path ``device relay`` takes) for as long as the run lasts, then
    revokes them. Yields the URL and the relays by organisation (None: an external broker).
    """
    from overwatch_lab.lab import Lab

    lab = Lab.attach(data_dir, identity="internal")
    try:
        creds = lab.fleet.relays(scenario)
        try:
            yield None if creds is None else (lab.nats_url, creds.by_org)
        finally:
            lab.fleet.release(creds)
    finally:
        lab.down()


def _print_credential(verb: str, row: dict[str, Any], nats_url: str | None) -> None:
    ents = ", ".join(row["entities"]) or "every organisation"
    print(f"{verb} {row['role']} {row['name']!r} ({row['org_id'] or '*'}: {ents})", flush=True)
    print(f"  credentials  {row['file']}  (0600: hand it to the device, keep it secret)", flush=True)
    print(f"  nkey seed    {row['file'].removesuffix('.json')}.nk", flush=True)
    if nats_url:
        print(f"  nats_url     {nats_url}", flush=True)


def cmd_device(a: argparse.Namespace) -> int:
    """Run one ``device`` subcommand."""
    if a.device == "list":
        creds = CredentialStore(_data_dir(a) / CREDENTIALS_DIR).credentials()
        rows = [c.row() for c in creds]
        if a.json:
            print(json.dumps(rows, indent=2), flush=True)
        else:
            for r in rows:
                print(f"{r['role']:<9} {r['name']:<24} {r['org_id'] or '*':<16} {','.join(r['entities'])}", flush=True)
            if not rows:
                print("no identities issued", flush=True)
        return 0
    lab = _attach(a)
    try:
        if a.device == "add":
            cred = lab.devices.add(a.org, a.entity, a.type, name=a.name)
            _print_credential("issued", cred.row(), lab.nats_url)
        elif a.device == "relay":
            cred = lab.devices.relay(a.name, a.org, a.entities)
            _print_credential("issued", cred.row(), lab.nats_url)
        else:
            cred = lab.devices.revoke(a.name)
            print(f"revoked {cred.grant.role} {cred.grant.name!r}; the broker reloaded and closed its connections", flush=True)
    finally:
        lab.down()
    return 0


def add_device_parser(sub: Any) -> None:
    """Add ``device`` and its subcommands to the CLI's subparsers."""
    dev = sub.add_parser(
        "device",
        help="issue, list and revoke device credentials of a running lab's broker",
        description="Each device gets an NKey user of the embedded broker that may publish its own "
        "telemetry, events and command acks and receive its own commands, nothing else.",
    )
    dsub = dev.add_subparsers(dest="device", required=True)
    add = dsub.add_parser("add", help="register ORG/ENTITY and write its credentials file (0600)")
    add.add_argument("org", metavar="ORG", help="the entity's organisation (registered if new)")
    add.add_argument("entity", metavar="ENTITY", help="the entity id (registered if new)")
    add.add_argument("--type", choices=sorted(ENTITY_TYPES), metavar="TYPE",
                     help="entity type of a new entity (default: aircraft_multirotor)")  # fmt: skip
    add.add_argument("--name", help="display name of a new entity (default: its id)")
    relay = dsub.add_parser("relay", help="one connection for several registered entities of one org")
    relay.add_argument("name", metavar="NAME", help="the relay's name (token rule)")
    relay.add_argument("org", metavar="ORG", help="the organisation of every entity")
    relay.add_argument("entities", nargs="+", metavar="ENTITY", help="registered entities it speaks for")
    ls = dsub.add_parser("list", help="list every issued identity")
    ls.add_argument("--json", action="store_true", help="print JSON")
    rv = dsub.add_parser("revoke", help="withdraw an identity; the broker reloads and disconnects it")
    rv.add_argument("name", metavar="NAME", help="the entity id of a device, or a relay's name")
    for p in (add, relay, ls, rv):
        add_config_flags(p, [DATA_DIR_FLAG])
    dev.set_defaults(func=cmd_device)
