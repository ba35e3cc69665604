"""Commands to devices, in the order a request meets them:

    catalog     what each device kind can be told, and whether a request says it properly
    targets     which devices a group command's target (ward, parent, bbox, kind, devices) picks
    service     accepting, a lane per device, parking while offline, expiry, restart resume
    transports  how a command travels: MQTT, a Modbus gateway, a third-party polling adapter
    journal     the command rows, their batched status changes and audit entries
    views       commands and groups as the API shows them
    command     the Command and its Outcome, shared by the above
"""
