"""The alarm engine: committed batches in, ISA-18.2 alarms out (stored, broadcast to the
hub, handed to the notifier). The rules themselves are pure and live in ``rules/``.
"""
