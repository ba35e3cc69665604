"""Commands to devices: the catalogue of what each kind can be told, the service that
sends them over MQTT, Modbus or a polling adapter, and their journal.
"""
