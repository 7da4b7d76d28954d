"""A scenario run without NATS, hashed: the determinism check (same scenario + seed + start = same bytes).

:func:`telemetry_hash` steps a :class:`~simulators.model.FleetModel` for a while and hashes
every message it would send. ``overwatch-lab sim SCENARIO --dry-run`` prints it, and tests pin
that a seed, a start time and a device split give the bytes they should.
"""

from __future__ import annotations

import hashlib

from simulators.model import FleetModel
from simulators.scenario import Scenario


def telemetry_hash(scenario: Scenario, duration_s: float, *, start_epoch_s: float | None = None) -> str:
    """Run ``scenario`` without NATS for ``duration_s`` and hash every message it sends.

    The sha256 covers subject, ``Nats-Msg-Id`` and payload of every emission (registration,
    device events and telemetry, faults included), in emission order. It depends only on the
    scenario, its seed and the start time (``start_epoch_s``, else the scenario's, else
    :data:`~simulators.scenario.DEFAULT_START_EPOCH_S`): never on the machine or a speed factor.
    """
    model = FleetModel(scenario, start_epoch_s=start_epoch_s)
    digest = hashlib.sha256()
    for em in model.run_dry(duration_s):
        digest.update(em.subject.encode())
        digest.update(b"\x00")
        digest.update((em.msg_id or "").encode())
        digest.update(b"\x00")
        digest.update(len(em.payload).to_bytes(4, "big"))
        digest.update(em.payload)
    return digest.hexdigest()
