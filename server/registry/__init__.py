"""The device registry: the device model and its validation, bulk import and export,
per-device MQTT credentials and the synthetic city's seed.
"""
