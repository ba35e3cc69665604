"""The websocket hub: committed state and alarms pushed to every map and crew page that
watches them, per viewport.

``ws`` is the endpoint; ``hub`` routes each committed batch, status change and alarm to the
clients whose viewport (``index``) sees it; ``client`` is one connection's queue and writer,
``deltas`` the conflated updates it carries; ``relay`` carries them between processes.
``past`` rebuilds the map at a past instant and ``replay`` plays what followed, in the same
messages (``{"op": "replay"}``).
"""
