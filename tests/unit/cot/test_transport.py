"""CoT destinations (overwatch_lab/cot/transport.py): what is accepted, and a clear error otherwise."""

from __future__ import annotations

import socket

import pytest

from overwatch_lab.cot.transport import CotTarget, UdpTransport, parse_target
from overwatch_lab.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "target", "multicast"),
    [
        ("udp://239.2.3.1:6969", CotTarget("udp", "239.2.3.1", 6969), True),
        ("udp://239.2.3.1", CotTarget("udp", "239.2.3.1", 6969), True),
        ("udp://127.0.0.1:4242", CotTarget("udp", "127.0.0.1", 4242), False),
        ("UDP://[::1]:4242", CotTarget("udp", "::1", 4242), False),
        ("udp://[ff02::1]:6969", CotTarget("udp", "ff02::1", 6969), True),
        ("tcp://takserver:8087", CotTarget("tcp", "takserver", 8087), False),
        ("tcp://127.0.0.1", CotTarget("tcp", "127.0.0.1", 8087), False),
        ("tcp://239.2.3.1:8087", CotTarget("tcp", "239.2.3.1", 8087), False),
    ],
)
def test_accepted_destinations(url, target, multicast):
    got = parse_target(url)
    assert got == target and got.multicast is multicast
    assert parse_target(str(got)) == got


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ssl://takserver:8089", "scheme must be udp:// or tcp://"),
        ("239.2.3.1:6969", "scheme must be udp:// or tcp://"),
        ("udp://:6969", "no host"),
        ("udp://host:99999", "bad CoT destination"),
        ("udp://host:port", "bad CoT destination"),
        ("udp://host:0", "port 0"),
        ("tcp://host:8087/path", "only tcp://HOST:PORT"),
        ("udp://host:6969?ttl=3", "only udp://HOST:PORT"),
        ("tcp://user@host:8087", "only tcp://HOST:PORT"),
    ],
)
def test_refused_destinations_say_why(url, message):
    with pytest.raises(ConfigError, match=message):
        parse_target(url)


def test_multicast_is_sent_with_ttl_1_and_loopback_on():
    t = UdpTransport(parse_target("udp://239.2.3.1:6969"), multicast_ttl=1, multicast_interface="127.0.0.1")
    try:
        assert t.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
        assert t.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
        assert (
            socket.inet_ntoa(t.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)) == "127.0.0.1"
        )
    finally:
        t.close()


def test_bad_multicast_options_are_refused():
    with pytest.raises(ConfigError, match="TTL must be 0..255"):
        UdpTransport(parse_target("udp://239.2.3.1:6969"), multicast_ttl=300, multicast_interface=None)
    with pytest.raises(ConfigError, match="not a multicast group"):
        UdpTransport(parse_target("udp://127.0.0.1:6969"), multicast_ttl=1, multicast_interface="127.0.0.1")
    with pytest.raises(ConfigError, match="multicast interface 'nope'"):
        UdpTransport(parse_target("udp://239.2.3.1:6969"), multicast_ttl=1, multicast_interface="nope")
