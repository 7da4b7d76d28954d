"""The MAVLink bridge: real autopilots, ground-station forwards and SITL talking to a lab.

``overwatch-lab mavlink --listen udp:127.0.0.1:14550 --org ORG`` on the command line, or::

    from overwatch_lab.mavlink import Bridge

    async with Bridge(lab, org="org-a", listen="udp:127.0.0.1:14550") as bridge:
        ...

Modules: :mod:`~overwatch_lab.mavlink.bridge` (the socket, registration, the envelopes),
:mod:`~overwatch_lab.mavlink.inbound` (a packet's fields → telemetry data, pure),
:mod:`~overwatch_lab.mavlink.outbound` (the lab's relay messages → MAVLink, pure),
:mod:`~overwatch_lab.mavlink.vehicle` (one vehicle and the commands run against it),
:mod:`~overwatch_lab.mavlink.publisher` (bounded, acknowledged JetStream publishing),
:mod:`~overwatch_lab.mavlink.tlog` (telemetry logs). Importing this package does not import
pymavlink; starting a bridge does. docs/mavlink.md is the integrator's guide.
"""

from __future__ import annotations

from overwatch_lab.mavlink.bridge import DEFAULT_LISTEN, Bridge, BridgeStats, parse_listen

__all__ = ["DEFAULT_LISTEN", "Bridge", "BridgeStats", "parse_listen"]
