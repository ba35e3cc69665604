"""Built-in Modbus register-map profiles (JSON data files, see ``adapters.modbus.profile``).

A package only so the JSON files ship in the wheel and load through importlib.resources.
"""
