"""The alarm engine: committed batches in, ISA-18.2 alarms out (stored, broadcast to the
hub, handed to the notifier). The rules themselves are pure and live in ``rules/``.

In the order a reading goes through them:

    engine.py    the ingest listener: a committed batch → rule evaluation → transitions
    queue.py     the write queue and its typed items
    persist.py   one task storing each item in its own transaction, in order
    writes.py    the shape of every write: locked row, lifecycle change, event, notifications
    timers.py    on/off delays and stale deadlines, shelving expiry, chattering release
    actions.py   operators' actions (ack, shelve, assign, …) raising ``server.errors``
    reload.py    rules from files and the API, device changes, restore at start
    rulefiles.py the ``[rules] paths`` files, re-read on change
    views.py     an alarm as the API, the hub and the notifier show it
"""
