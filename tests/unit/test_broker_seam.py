"""The broker seam's translation table (overwatch_lab/broker/jetstream.py): nats-py error in, ours out.

Pure: the nats-py errors are built by hand. The calls against a real nats-server are in
``tests/integration/test_broker_seam.py``.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
import pytest

from overwatch_lab.broker.jetstream import translate, translated
from overwatch_lab.errors import (
    BrokerApiError,
    BrokerConnectionClosed,
    BrokerError,
    BrokerNotFound,
    BrokerTimeout,
    BrokerUnavailable,
)


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        (nats.errors.ConnectionClosedError(), BrokerConnectionClosed),
        (nats.errors.ConnectionDrainingError(), BrokerConnectionClosed),
        (nats.errors.NoRespondersError(), BrokerUnavailable),
        (nats.errors.NoServersError(), BrokerUnavailable),
        (nats.errors.ConnectionReconnectingError(), BrokerUnavailable),
        (nats.errors.OutboundBufferLimitError(), BrokerUnavailable),
        (nats.errors.UnexpectedEOF(), BrokerUnavailable),
        (nats.js.errors.NoStreamResponseError(), BrokerUnavailable),
        (nats.errors.TimeoutError(), BrokerTimeout),
        (nats.errors.FlushTimeoutError(), BrokerTimeout),
        (nats.js.errors.FetchTimeoutError(), BrokerTimeout),
        (
            nats.js.errors.NotFoundError(code=404, err_code=10014, description="consumer not found"),
            BrokerNotFound,
        ),
        (
            nats.js.errors.BadRequestError(code=400, err_code=10058, description="stream name in use"),
            BrokerApiError,
        ),
        (nats.js.errors.ServiceUnavailableError(code=503, err_code=10039), BrokerApiError),
        (nats.errors.MaxPayloadError(), BrokerError),
        (nats.errors.MsgAlreadyAckdError(), BrokerError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_each_nats_error_becomes_exactly_our_type(theirs, ours):
    got = translate(theirs, "doing it")
    assert type(got) is ours
    assert str(got).startswith("doing it: ")


def test_a_timeout_is_still_a_timeout_error_and_an_api_error_keeps_the_servers_words():
    assert isinstance(translate(nats.errors.TimeoutError(), "x"), TimeoutError)
    got = translate(
        nats.js.errors.NotFoundError(code=404, err_code=10059, description="stream not found"), "info"
    )
    assert isinstance(got, BrokerApiError)
    assert (got.code, got.err_code, got.description) == (404, 10059, "stream not found")
    assert "stream not found (code 404, err_code 10059)" in str(got)


def test_translated_chains_the_nats_error_and_leaves_others_alone():
    cause = nats.errors.ConnectionClosedError()
    with pytest.raises(BrokerConnectionClosed) as caught:
        with translated("publish to a.b"):
            raise cause
    assert caught.value.__cause__ is cause and "publish to a.b" in str(caught.value)
    with pytest.raises(ValueError, match="not ours to translate"):
        with translated("x"):
            raise ValueError("not ours to translate")


def test_cancellation_passes_through_the_seam_untouched():
    with pytest.raises(asyncio.CancelledError):
        with translated("x"):
            raise asyncio.CancelledError
