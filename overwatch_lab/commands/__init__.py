"""Commands with reliable delivery and acknowledgement (issue 4).

- :mod:`.ledger`: open commands in memory, libSQL as the record, KV as the live mirror.
- :mod:`.worker`: the ingress worker (``command-processor``) and the ack worker
  (``command-ack-processor``).
- :mod:`.delivery`: the deliverer task (send, resend with backoff, expire, time out).
- :mod:`.api`: :class:`~overwatch_lab.commands.api.CommandHandle` and the command DataFrames.
- :mod:`.client`: :class:`~overwatch_lab.commands.client.Commands`, the Lab's ``lab.commands``.

The wire contract is in :mod:`overwatch_lab.protocol.commands`.
"""
