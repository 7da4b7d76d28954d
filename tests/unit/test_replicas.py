"""Replicas of the lab's streams and buckets: LabConfig's checks and what provisioning compares."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.js import api

from overwatch_lab.broker import replicas as rep
from overwatch_lab.broker.cluster import ClusterSpec
from overwatch_lab.broker.provision import _STREAM_FIELDS, stream_config
from overwatch_lab.cli import _lab_config, build_parser
from overwatch_lab.config import DEFAULT_STREAMS, LabConfig
from overwatch_lab.errors import ConfigError
from overwatch_lab.protocol import subjects as s

CLUSTER = "nats://127.0.0.1:1,nats://127.0.0.1:2,nats://127.0.0.1:3"


def cfg(tmp_path: Path, **changes: Any) -> LabConfig:
    return LabConfig(data_dir=tmp_path, nats_url=CLUSTER, **changes)


def test_replicas_default_to_none_and_take_1_to_5(tmp_path):
    assert cfg(tmp_path).replicas is None
    assert [cfg(tmp_path, replicas=n).replicas for n in (1, 3, 5)] == [1, 3, 5]


@pytest.mark.parametrize("value", [0, 6, -1, 2.0, True, "3"])
def test_replicas_outside_1_to_5_are_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"replicas must be a whole number 1\.\.5"):
        cfg(tmp_path, replicas=value)


def test_more_than_one_replica_needs_a_cluster_url(tmp_path):
    with pytest.raises(ConfigError, match="replicas=3 needs a NATS cluster.*--nats-url"):
        LabConfig(data_dir=tmp_path, replicas=3)
    assert LabConfig(data_dir=tmp_path, replicas=1).replicas == 1  # the embedded broker is R1


def test_an_even_count_is_accepted_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="overwatch_lab.config"):
        assert cfg(tmp_path, replicas=2).replicas == 2
    assert "an odd count is recommended" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="overwatch_lab.config"):
        cfg(tmp_path, replicas=3)
    assert caplog.text == ""


def test_a_stream_s_own_replicas_override_the_lab_s_and_are_checked(tmp_path):
    base = cfg(tmp_path, replicas=3)
    one = base.with_stream_limits(s.STREAM_QUARANTINE, replicas=1)
    assert one.stream_replicas(one.streams[s.STREAM_QUARANTINE]) == 1
    assert one.stream_replicas(one.streams[s.STREAM_TELEMETRY]) == 3
    with pytest.raises(ConfigError, match=r"streams\['CONSTELLATION_TELEMETRY'\]\.replicas must be"):
        base.with_stream_limits(s.STREAM_TELEMETRY, replicas=7)
    with pytest.raises(ConfigError, match="needs a NATS cluster"):
        LabConfig(data_dir=tmp_path).with_stream_limits(s.STREAM_TELEMETRY, replicas=3)


def test_stream_config_carries_the_replicas_and_defaults_to_one():
    limits = DEFAULT_STREAMS[s.STREAM_EVENTS]
    assert stream_config(s.STREAM_EVENTS, limits).num_replicas == 1
    assert stream_config(s.STREAM_EVENTS, limits, replicas=3).num_replicas == 3
    assert stream_config(s.STREAM_EVENTS, dataclasses.replace(limits, replicas=5)).num_replicas == 5


def test_num_replicas_is_compared_only_when_configured():
    assert rep.managed_fields(_STREAM_FIELDS, None) == _STREAM_FIELDS
    assert rep.managed_fields(_STREAM_FIELDS, 3) == (*_STREAM_FIELDS, "num_replicas")
    have = api.StreamConfig(name="KV_X", max_msgs_per_subject=5, num_replicas=3, storage=api.StorageType.FILE)
    want, fields = rep.kv_want(have, None, max_msgs_per_subject=10)
    assert fields == ("max_msgs_per_subject", "storage") and want.num_replicas == 3  # kept
    want, fields = rep.kv_want(have, 1, file_storage=False, max_msgs_per_subject=10)
    assert fields == ("max_msgs_per_subject", "num_replicas") and want.num_replicas == 1


def _api_error(err_code: int, description: str) -> nats.js.errors.APIError:
    return nats.js.errors.APIError(code=400, err_code=err_code, description=description)


def test_jetstream_s_refusals_are_explained_with_the_count_and_the_fix():
    few = rep.explain(_api_error(rep.ERR_NO_PEERS, "no suitable peers for placement"), 5)
    assert few is not None and "5 replicas need 5 JetStream servers" in few and "--replicas" in few
    full = rep.explain(_api_error(rep.ERR_INSUFFICIENT_RESOURCES, "insufficient resources"), 3)
    assert full is not None and "3 replicas need 3" in full
    alone = rep.explain(_api_error(rep.ERR_REPLICAS_NOT_CLUSTERED, "replicas > 1 not supported"), 3)
    assert alone is not None and "not part of one" in alone
    assert rep.explain(_api_error(rep.ERR_NO_PEERS, "no suitable peers"), 1) is None  # not about replicas
    assert rep.explain(_api_error(10058, "stream name already in use"), 3) is None
    assert rep.explain(TimeoutError(), 3) is None


def test_a_cluster_node_s_config_names_it_and_routes_to_every_node():
    spec = ClusterSpec("lab", "n2", 6222, (6221, 6222, 6223))
    text = "\n".join(spec.config_lines())
    assert 'server_name: "n2"' in text and 'listen: "127.0.0.1:6222"' in text
    assert text.count("nats-route://127.0.0.1:") == 3
    with pytest.raises(ValueError, match="at least one route"):
        ClusterSpec("lab", "n1", 6221, ())


def test_up_replicas_without_a_cluster_names_the_flag(tmp_path):
    args = build_parser().parse_args(["up", "--data-dir", str(tmp_path), "--replicas", "3"])
    with pytest.raises(ConfigError, match=r"replicas=3 needs a NATS cluster.*\(from --replicas\)"):
        _lab_config(args)
    args = build_parser().parse_args(["up", "--data-dir", str(tmp_path), "--nats-url", CLUSTER, "--replicas", "3"])
    assert _lab_config(args).replicas == 3
