"""``ioc simulate``: the simulated devices on their own, against IOC_DATABASE_URL/IOC_MQTT_URL.

This module is the one place in ``server.simulate`` allowed to start an event loop
(``asyncio.run``): ``ioc simulate`` runs without the web server, whose ``web.run_app``
owns the loop everywhere else (``ioc demo`` runs the Simulator inside the server's loop).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from contextlib import suppress

#: First gateway port for ``ioc simulate``: fixed, so the printed config stays valid.
DEFAULT_MODBUS_PORT = 15020


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="run the simulated devices (MQTT and Modbus) against the registry",
        description="Animate the devices in IOC_DATABASE_URL: MQTT devices publish to "
                    "IOC_MQTT_URL, cabinets and water instruments listen as Modbus TCP "
                    "gateways (see --print-config for the server's [[modbus.gateways]]).")
    p.add_argument("--rate", type=float, help="load mode: this many messages per second, "
                   "5 values each, instead of each device's own interval")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-faults", action="store_true", help="no scheduled faults")
    p.add_argument("--fault-interval", type=float, default=180.0, metavar="S",
                   help="mean seconds between scheduled faults (default 180)")
    p.add_argument("--no-modbus", action="store_true", help="no Modbus gateways")
    p.add_argument("--no-mqtt", action="store_true", help="no MQTT devices")
    p.add_argument("--modbus-host", default="127.0.0.1")
    p.add_argument("--modbus-port", type=int, default=DEFAULT_MODBUS_PORT,
                   help=f"first gateway's port, the others follow (default "
                        f"{DEFAULT_MODBUS_PORT})")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--print-config", action="store_true",
                   help="print the TOML [[modbus.gateways]] for IOC_CONFIG and exit")
    p.set_defaults(func=cmd_simulate)


def to_toml(gateways: list[dict]) -> str:
    """The gateways as CONTRACT.md's TOML (strings, numbers, nested unit tables only)."""

    def val(v) -> str:
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)

    out = []
    for gw in gateways:
        out.append("[[modbus.gateways]]")
        out += [f"{k} = {val(v)}" for k, v in gw.items() if k != "units"]
        for u in gw.get("units", []):
            out.append("\n[[modbus.gateways.units]]")
            out += [f"{k} = {val(v)}" for k, v in u.items()]
        out.append("")
    return "\n".join(out)


def cmd_simulate(args: argparse.Namespace) -> int:
    from server.cli.common import load_settings, need_database
    from server.mqtt.dynsec import mqtt_tls
    from server.simulate import Simulator

    settings = load_settings()
    # The simulator's own broker account when there is one (a running demo's), else the server's.
    url = settings.mqtt_simulator_url or settings.mqtt_url
    sim = Simulator(
        need_database(settings), url, seed=args.seed, rate=args.rate,
        tls=mqtt_tls(settings.model_copy(update={"mqtt_url": url})),
        faults=not args.no_faults, modbus=not args.no_modbus, mqtt=not args.no_mqtt,
        fault_interval_s=args.fault_interval, modbus_host=args.modbus_host,
        modbus_port=args.modbus_port,
    )
    if args.print_config:
        asyncio.run(sim.load())
        print(to_toml(sim.gateway_settings()), end="")
        return 0
    if not args.no_mqtt and not settings.mqtt_url:
        raise SystemExit("IOC_MQTT_URL is not set (e.g. mqtt://127.0.0.1:1883); "
                         "or pass --no-mqtt")
    with suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(_run(sim, args.duration))
    return 0


async def _run(sim, duration: float | None) -> None:
    # SIGTERM stops as cleanly as Ctrl-C (asyncio.run turns SIGINT into cancellation).
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    with suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        await sim.start()
        print(f"simulating {len(sim.fleet)} devices; Ctrl-C stops", flush=True)
        if duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)
    finally:  # also on Ctrl-C / SIGTERM (cancellation), which then propagates
        await sim.stop()
        with suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGTERM)
