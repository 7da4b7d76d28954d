"""The core of a lab: one typed interface, two implementations.

- :mod:`.base`: :class:`~overwatch_lab.core.base.LabCore`, what the Lab facade and its parts
  (commands, frames, fleet) stand on: the connection, state reads, publishing, counters.
- :mod:`.owner`: :class:`~overwatch_lab.core.owner.OwnerCore`, the lab that owns its fabric
  (data-dir lock, store, supervised broker, provisioning, workers, sync, stream watch).
- :mod:`.attached`: :class:`~overwatch_lab.core.attached.AttachedCore`, a lab attached to
  another process's fabric from its ``lab.json`` (no broker, workers or sync).
- :mod:`.runner`: :class:`~overwatch_lab.core.runner.CoreRunner`, which runs a core on a loop
  thread of its own (the lab's lifecycle, state and failure).
- :mod:`.stats`: the bucket where an owner publishes its counters for attached labs.
"""
