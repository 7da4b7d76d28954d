"""The unknown-id rule: final only once the lifecycle consumers have caught up past the message."""

from __future__ import annotations

from nats.aio.msg import Msg

from overwatch_lab.errors import BrokerError, DatabaseError, DatabaseUnavailable, KvConflictError
from overwatch_lab.protocol.subjects import STREAM_ENTITIES, STREAM_ORGANIZATIONS
from overwatch_lab.registry import ConsumerProgress, Registry
from overwatch_lab.workers.base import Outcome
from overwatch_lab.workers.common import MissCheck, earlier_events_done, kv_failure, miss_is_final

T0 = 1_800_000_000.0


def js_msg(stored: float, seq: int = 7, stream: str = "CONSTELLATION_TELEMETRY") -> Msg:
    """A JetStream message as delivered: its metadata lives in the reply subject."""
    reply = f"$JS.ACK.{stream}.durable.1.{seq}.{seq}.{int(stored * 1e9)}.0"
    return Msg(_client=None, subject="constellation.telemetry.org-a.ghost", reply=reply)  # type: ignore[arg-type]


class Sources:
    """Progress answers per stream, counting the reads."""

    def __init__(self, **horizons: float) -> None:
        self.horizons = horizons
        self.reads: list[str] = []
        self.fail = False

    def registry(self, grace_s: float = 0.5) -> Registry:
        reg = Registry(grace_s=grace_s)
        for key, stream in (("entities", STREAM_ENTITIES), ("orgs", STREAM_ORGANIZATIONS)):
            if key in self.horizons:
                reg.add_progress_source(stream, self._source(stream, self.horizons[key]))
        return reg

    def _source(self, stream: str, horizon: float):
        async def read() -> ConsumerProgress:
            self.reads.append(stream)
            if self.fail:
                raise BrokerError("no answer")
            return ConsumerProgress(stream, ack_floor=10, horizon=horizon, idle=False)

        return read


def test_miss_is_final_only_past_the_grace():
    assert miss_is_final(T0, horizon=T0 + 0.5, grace_s=0.5)
    assert not miss_is_final(T0, horizon=T0 + 0.49, grace_s=0.5)
    assert not miss_is_final(T0, horizon=T0 - 1, grace_s=0.0)


def test_earlier_events_done_counts_this_batchs_applied_events():
    assert earlier_events_done(11, ack_floor=10, acked_in_batch=[])
    assert earlier_events_done(11, ack_floor=12, acked_in_batch=[])
    assert not earlier_events_done(13, ack_floor=10, acked_in_batch=[11])
    assert earlier_events_done(13, ack_floor=10, acked_in_batch=[11, 12, 14])
    assert not earlier_events_done(13, ack_floor=10, acked_in_batch=[5, 11, 14])


def test_kv_failure_holds_infrastructure_and_retries_the_rest():
    assert kv_failure("e", KvConflictError("x")).outcome is Outcome.HOLD
    assert kv_failure("e", TimeoutError()).outcome is Outcome.HOLD
    assert kv_failure("e", DatabaseUnavailable("disk full")).outcome is Outcome.HOLD
    assert kv_failure("e", DatabaseError("CHECK constraint failed")).outcome is Outcome.RETRY
    assert kv_failure("e", LookupError("row gone")).outcome is Outcome.RETRY


async def test_an_unknown_entity_is_held_while_a_consumer_is_behind_the_message():
    src = Sources(entities=T0 + 10, orgs=T0 + 0.2)  # the org consumer is behind T0 + grace
    check = MissCheck(src.registry())
    held = await check.unknown_entity("ghost", js_msg(T0))
    assert held.outcome is Outcome.HOLD and "in flight" in (held.reason or "")
    assert (await check.unknown_entity("ghost", js_msg(T0 - 5))).outcome is Outcome.POISON
    assert sorted(src.reads) == [STREAM_ENTITIES, STREAM_ORGANIZATIONS]  # once per batch, not per message


async def test_an_unknown_entity_is_poison_once_both_consumers_are_past_it():
    check = MissCheck(Sources(entities=T0 + 1, orgs=T0 + 1).registry())
    result = await check.unknown_entity("ghost", js_msg(T0))
    assert result.outcome is Outcome.POISON and "unknown entity 'ghost'" in (result.reason or "")


async def test_an_entity_registered_during_the_read_is_held_not_quarantined():
    src = Sources(entities=T0 + 10, orgs=T0 + 10)
    reg = src.registry()
    check = MissCheck(reg)
    reg.entities["ghost"] = "org-a"  # as if the entity worker applied it while the server answered
    assert (await check.unknown_entity("ghost", js_msg(T0))).outcome is Outcome.HOLD


async def test_no_answer_from_the_server_holds():
    src = Sources(entities=T0 + 10, orgs=T0 + 10)
    src.fail = True
    result = await MissCheck(src.registry()).unknown_entity("ghost", js_msg(T0))
    assert result.outcome is Outcome.HOLD and "no answer" in (result.reason or "")


async def test_unknown_org_looks_at_the_org_consumer_only():
    src = Sources(entities=T0 - 100, orgs=T0 + 1)
    check = MissCheck(src.registry())
    assert (await check.unknown_org("org-x", js_msg(T0, stream=STREAM_ENTITIES))).outcome is Outcome.POISON
    assert (
        await check.unknown_org("org-x", js_msg(T0 + 0.8, stream=STREAM_ENTITIES))
    ).outcome is Outcome.HOLD
    assert src.reads == [STREAM_ORGANIZATIONS]


async def test_a_status_for_an_entity_not_created_is_final_once_earlier_events_are_done():
    src = Sources(entities=T0, orgs=T0)  # ack_floor 10
    check = MissCheck(src.registry())
    first = await check.unknown_entity_in_stream("ghost", js_msg(T0, seq=11, stream=STREAM_ENTITIES), [])
    assert first.outcome is Outcome.POISON
    behind = await check.unknown_entity_in_stream("ghost", js_msg(T0, seq=13, stream=STREAM_ENTITIES), [11])
    assert behind.outcome is Outcome.HOLD  # seq 12 is neither acknowledged nor applied here


async def test_without_progress_sources_a_miss_is_final():
    assert (await MissCheck(Registry()).unknown_entity("ghost", js_msg(T0))).outcome is Outcome.POISON
