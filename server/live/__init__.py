"""The websocket hub: committed state and alarms pushed to every map and crew page that
watches them, per viewport.
"""
