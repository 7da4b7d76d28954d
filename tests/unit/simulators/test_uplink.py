"""Uplink: which connection each emission goes out on (pure routing, fake clients)."""

from __future__ import annotations

import asyncio
import json

import pytest

from overwatch_lab.errors import ConfigError, ScenarioError
from overwatch_lab.nats_auth import NatsAuth
from simulators.cli import build_parser, scoped_orgs
from simulators.emission import Emission
from simulators.registration import publish_all
from simulators.scenario import Scenario
from simulators.uplink import Uplink


class FakeClient:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[str] = []
        self.is_closed = False

    async def publish(self, subject: str, payload: bytes, headers=None) -> None:
        self.sent.append(subject)


def _em(org: str, eid: str) -> Emission:
    return Emission(f"constellation.telemetry.{org}.{eid}", b"{}", f"{eid}-1", "telemetry", "VFR_HUD", eid)


def test_each_emission_goes_out_on_its_organisations_connection():
    a, b = FakeClient("a"), FakeClient("b")
    up = Uplink(by_org={"org-a": a, "org-b": b})
    up.bind([("a1", "org-a"), ("b1", "org-b"), ("a2", "org-a")])
    assert up.scoped and up.connections == [a, b]
    n = asyncio.run(publish_all(up, [_em("org-a", "a1"), _em("org-b", "b1"), _em("org-a", "a2")]))
    assert n == 3
    assert a.sent == ["constellation.telemetry.org-a.a1", "constellation.telemetry.org-a.a2"]
    assert b.sent == ["constellation.telemetry.org-b.b1"]


def test_a_single_connection_carries_everything_and_a_missing_org_is_named():
    one = FakeClient("one")
    up = Uplink.single(one)
    up.bind([("a1", "org-a")])
    assert not up.scoped
    asyncio.run(publish_all(up, [_em("org-a", "a1"), _em("org-z", "z9")]))
    assert len(one.sent) == 2
    scoped = Uplink(by_org={"org-a": FakeClient("a")})
    with pytest.raises(ScenarioError, match="no credentials for organisation 'org-b'"):
        scoped.bind([("b1", "org-b")])


def _scenario() -> Scenario:
    return Scenario.from_dict(
        {
            "name": "two",
            "seed": 1,
            "area": {"center": [32.95, -96.80], "size_m": 500, "ground_alt_m": 150},
            "orgs": [{"org_id": "org-a", "name": "A", "org_type": "civilian"}],
            "fleets": [{"name": "q", "org": "org-a", "kind": "multirotor", "count": 2, "behaviour": "hold"}],
        },
        source="test",
    )


def test_a_credentials_file_must_speak_for_every_device_of_the_scenario(tmp_path):
    sc = _scenario()
    ids = [eid for eid, *_ in sc.devices()]
    auth = NatsAuth(nkey_seed_file="/x.nk", inbox_prefix="_INBOX.relay.r1")
    path = tmp_path / "r1.json"
    path.write_text(json.dumps({"role": "relay", "org_id": "org-a", "entities": ids, "auth": auth.to_dict()}))
    args = build_parser().parse_args(["x", "--credentials", str(path)])
    assert scoped_orgs(args, sc, auth) == {"org-a": auth}
    path.write_text(
        json.dumps({"role": "relay", "org_id": "org-a", "entities": ids[:1], "auth": auth.to_dict()})
    )
    with pytest.raises(ConfigError, match=f"other devices .*{ids[1]}"):
        scoped_orgs(args, sc, auth)
    assert scoped_orgs(build_parser().parse_args(["x"]), sc, auth) is None  # no file: one identity for all
