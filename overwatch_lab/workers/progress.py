"""How far a lifecycle consumer has acknowledged its stream, read from the server.

A message naming an entity (or organisation) the registry does not know is only final once the
event that would register it can no longer be in flight: once every event stored in the
entities (and organisations) stream before that message has been acknowledged by its consumer.
:func:`consumer_progress` reads what is needed for that rule from nats-server: the consumer's
info (``ack_floor``, ``num_pending``, ``num_ack_pending``) and, when something is still
unacknowledged, the stored time of the first message after the ack floor (one
``STREAM.MSG.GET`` with ``next_by_subj``). Events are acknowledged only after the registry has
them, so "acknowledged" implies "known".
"""

from __future__ import annotations

import time

from nats.js import JetStreamContext

from overwatch_lab.broker import jetstream
from overwatch_lab.errors import BrokerError
from overwatch_lab.registry import ConsumerProgress


async def consumer_progress(js: JetStreamContext, stream: str, durable: str) -> ConsumerProgress:
    """Read the progress of ``durable`` on ``stream`` (one or two server requests).

    Raises:
        BrokerError: the server did not answer (the caller cannot tell whether a miss is final).
    """
    asked_at = time.time()  # before the request: everything stored before it is in the answer
    try:
        info = await jetstream.consumer_info(js, stream, durable)
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        if not info.num_pending and not info.num_ack_pending:
            return ConsumerProgress(stream, floor, asked_at, idle=True)
        subject = info.config.filter_subject or ">"
        first = await jetstream.next_stored(js, stream, floor + 1, subject)
        if first is None:  # nothing after the floor (any more): all acknowledged
            return ConsumerProgress(stream, floor, asked_at, idle=False)
    except (BrokerError, TimeoutError) as exc:
        raise BrokerError(f"progress of consumer {stream}/{durable} unavailable: {exc}") from exc
    # nats-py truncates the stored time to microseconds: an earlier horizon, so never a miss
    # declared final too soon.
    horizon = first.time.timestamp() if first.time is not None else 0.0
    return ConsumerProgress(stream, floor, min(horizon, asked_at), idle=False)
