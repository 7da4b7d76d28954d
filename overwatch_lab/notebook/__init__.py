"""The notebook face of the lab: rich HTML reprs and ipywidgets controls.

- :mod:`.html`: escaping, inline-styled building blocks and :func:`~.html.guarded` (a repr that
  never raises). Pure: no I/O, no third-party import.
- :mod:`.cards`: the HTML of a Lab, an entity's state, a command's ladder and a Simulation,
  each rendered from plain data the object gathered (so a card is testable without a lab).
- :mod:`.entity`: :class:`~.entity.EntityState`, what ``lab.entity(entity_id)`` returns.
- :mod:`.sim_controls`: ``sim.controls()``, play/pause, speed and fault injection.
- :mod:`.command_panel`: ``lab.commands.widget()``, send a command and watch its ladder.

The widget modules import ipywidgets when first used, never on ``import overwatch_lab``. They
take what they drive as Protocols of their own, so this package sits below the parts that use it
(see the layers in pyproject.toml).
"""
