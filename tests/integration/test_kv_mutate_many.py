"""EntityKV.mutate_many: pipelined compare-and-set writes with mutate's guarantees."""

from __future__ import annotations

import json

import nats.errors
import pytest

from overwatch_lab.broker.connect import connect
from overwatch_lab.broker.provision import open_kv, provision
from overwatch_lab.config import LabConfig
from overwatch_lab.errors import KvError
from overwatch_lab.kvstate import EntityKV


def _bump(doc):
    return {**(doc or {}), "n": (doc or {}).get("n", 0) + 1}


async def test_writes_many_keys_and_a_conflict_re_reads_and_re_applies(nc, js, tmp_path):
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    ekv = EntityKV(await open_kv(js))
    revs = {k: await ekv.kv.put(k, json.dumps({"n": 10}).encode()) for k in ("a", "b", "c")}
    stale = revs["c"]
    await ekv.kv.put("c", json.dumps({"n": 50, "other": True}).encode())  # another writer won
    out = await ekv.mutate_many(
        [
            ("a", _bump, (revs["a"], {"n": 10})),
            ("b", lambda d: None, (revs["b"], {"n": 10})),  # nothing to write
            ("c", _bump, (stale, {"n": 10})),
            ("new", _bump, None),  # unknown: read, then created
        ]
    )
    assert out[0] == await ekv.read("a") and out[0][1] == {"n": 11}
    assert out[1] == (revs["b"], {"n": 10}) and (await ekv.read("b"))[1] == {"n": 10}
    assert out[2] == await ekv.read("c") and out[2][1] == {"n": 51, "other": True}  # theirs kept
    assert out[3] == await ekv.read("new") and out[3][1] == {"n": 1}
    assert ekv.conflicts == 1
    # The shared inbox serves the next batch too.
    again = await ekv.mutate_many([("a", _bump, out[0]), ("c", _bump, out[2])])
    assert [doc for _, doc in again] == [{"n": 12}, {"n": 52, "other": True}]
    assert ekv.conflicts == 1


async def test_a_failing_mutation_fails_its_write_only(nc, js, tmp_path):
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    ekv = EntityKV(await open_kv(js))
    ra = await ekv.kv.put("a", b'{"n":1}')
    rb = await ekv.kv.put("b", b'{"n":1}')

    def boom(doc):
        raise LookupError("gone")

    out = await ekv.mutate_many([("a", boom, (ra, {"n": 1})), ("b", lambda d: {"x": float("nan")}, (rb, {}))])
    assert isinstance(out[0], LookupError) and isinstance(out[1], ValueError)
    assert await ekv.read("a") == (ra, {"n": 1}) and await ekv.read("b") == (rb, {"n": 1})
    ok = await ekv.mutate_many([("a", _bump, (ra, {"n": 1}))])
    assert ok[0][1] == {"n": 2}


async def test_adds_finite_trusts_only_documents_this_client_wrote(nc, js, tmp_path):
    """A document someone else wrote (here with an infinity, as ``1e400``) is still checked."""
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    ekv = EntityKV(await open_kv(js))
    theirs = await ekv.kv.put("a", b'{"n":1,"x":1e400}')
    out = await ekv.mutate_many([("a", _bump, (theirs, {"n": 1, "x": float("inf")}))], adds_finite=True)
    assert isinstance(out[0], ValueError) and "non-finite" in str(out[0])
    assert (await ekv.kv.get("a")).revision == theirs  # nothing written
    mine = await ekv.mutate_many([("b", _bump, None)], adds_finite=True)  # created by this client
    again = await ekv.mutate_many([("b", _bump, mine[0])], adds_finite=True)
    assert again[0][1] == {"n": 2} and await ekv.read("b") == again[0]


async def test_a_closed_connection_is_a_kv_error_per_key(nats_server, tmp_path):
    client = await connect(nats_server.url, auth=nats_server.auth, name="pytest-kv-many")
    js = client.jetstream()
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    ekv = EntityKV(await open_kv(js))
    ra = await ekv.kv.put("a", b'{"n":1}')
    assert (await ekv.mutate_many([("a", _bump, (ra, {"n": 1}))]))[0][1] == {"n": 2}
    await client.close()
    out = await ekv.mutate_many([("a", _bump, (ra + 1, {"n": 2})), ("z", _bump, (0, None))])
    for key, res in zip("az", out, strict=True):
        assert isinstance(res, KvError), res
        assert f"{key!r}" in str(res)
        assert isinstance(res.__cause__, nats.errors.Error)


async def test_an_unanswered_write_fails_by_the_deadline(nc, js, tmp_path):
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    ekv = EntityKV(await open_kv(js), write_timeout_s=0.3)
    ra = await ekv.kv.put("a", b'{"n":1}')
    ekv._pre = "nowhere.kv."  # no stream stores it: the server answers "no responders"
    (res,) = await ekv.mutate_many([("a", _bump, (ra, {"n": 1}))])
    assert isinstance(res, KvError) and "NoResponders" in str(res) and "'a'" in str(res)
    silent = await nc.subscribe("nowhere.kv.>", cb=_ignore)  # someone listens, nobody answers
    (res,) = await ekv.mutate_many([("a", _bump, (ra, {"n": 1}))])
    assert isinstance(res, KvError) and "no acknowledgement" in str(res) and "'a'" in str(res)
    assert not ekv._waiting
    await silent.unsubscribe()
    assert await ekv.read("a") == (ra, {"n": 1})


@pytest.mark.parametrize("n", [700])
async def test_many_writes_in_one_batch(nc, js, tmp_path, n):
    await provision(js, LabConfig(data_dir=tmp_path / "lab"))
    ekv = EntityKV(await open_kv(js))
    first = await ekv.mutate_many([(f"k{i}", _bump, (0, None)) for i in range(n)])
    second = await ekv.mutate_many([(f"k{i}", _bump, first[i]) for i in range(n)])
    assert all(doc == {"n": 2} for _, doc in second)
    assert second[-1] == await ekv.read(f"k{n - 1}")


async def _ignore(msg):
    pass
