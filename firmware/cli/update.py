"""`branchline update serve|install PATH|status|confirm|cancel`: the update service (its
own unit on the box, branchline-update.service), a bundle handed to it, where it is, the
once-per-boot confirm step (branchline-update-confirm.service) and dropping a queued
update.

On the box RAUC's system.conf (/etc/rauc/system.conf) names the board (`compatible`) and
the keyring; the reboot into a trial is `systemctl reboot "0 tryboot"` (the Pi firmware's
one-shot tryboot flag), the reboot back `systemctl reboot`."""

from __future__ import annotations

import configparser
import json
import logging
import os
import subprocess
import time
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.cli.apiopts import DEFAULT_DATA_DIR, Subparsers, add_api_options, api_address
from foundation.errors import BranchlineError

if TYPE_CHECKING:
    from firmware.update.client import UpdateClient
    from firmware.update.health import Check, Selftest

DEFAULT_RAUC_CONF = "/etc/rauc/system.conf"
DEFAULT_COMPATIBLE = "branchline-rpi"
POLL_S = 0.5
DONE = ("REBOOTING", "GOOD", "ROLLED_BACK", "FAILED", "IDLE")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("update", help="signed A/B firmware updates (RAUC, tryboot)",
                       description="Install a signed RAUC bundle into the other slot, try it "
                                   "once, keep it only when the box is healthy.")
    cmds = p.add_subparsers(dest="update_command", metavar="ACTION", required=True)
    serve = cmds.add_parser("serve", help="run the update service (branchline-update.service)")
    _socket(serve)
    _box(serve)
    serve.set_defaults(func=cmd_serve)
    install = cmds.add_parser("install", help="hand a bundle to the update service")
    install.add_argument("path", metavar="PATH", help="the .raucb on the box (a USB stick)")
    install.add_argument("--force", action="store_true",
                         help="do not wait for calls to end or for the quiet window")
    install.add_argument("--allow-downgrade", action="store_true",
                         help="allow a version not newer than the running one")
    install.add_argument("--no-wait", action="store_true", help="do not follow the progress")
    _socket(install)
    install.set_defaults(func=cmd_install)
    status = cmds.add_parser("status", help="where the update is")
    status.add_argument("--json", action="store_true", help="print the state document")
    _socket(status)
    status.set_defaults(func=cmd_status)
    cancel = cmds.add_parser("cancel", help="drop a queued update (before it installs)")
    _socket(cancel)
    cancel.set_defaults(func=cmd_cancel)
    confirm = cmds.add_parser("confirm", help="after a boot: keep the trial slot or roll back")
    _box(confirm)
    confirm.add_argument("--web", metavar="HOST:PORT", default=None,
                         help="the web page to check (default: $BRANCHLINE_WEB_LISTEN); "
                              "'none' skips it")
    confirm.add_argument("--timeout", type=float, metavar="S", default=None,
                         help="health check time (default: update.health_timeout_s)")
    confirm.set_defaults(func=cmd_confirm)


def _socket(p: ArgumentParser) -> None:
    from firmware.update.server import default_socket

    p.add_argument("--socket", metavar="PATH", default=None,
                   help=f"the update service's socket (default: {default_socket()})")


def _box(p: ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR",
                   default=os.environ.get("BRANCHLINE_DATA") or DEFAULT_DATA_DIR)
    p.add_argument("--config-dir", metavar="DIR", default=None)
    p.add_argument("--rauc-conf", metavar="FILE", default=None,
                   help=f"RAUC's system.conf (default: {DEFAULT_RAUC_CONF})")
    p.add_argument("--keyring", metavar="PEM", default=None,
                   help="trusted signing CA (default: system.conf's [keyring] path)")
    p.add_argument("--compatible", default=None,
                   help="this board (default: system.conf's compatible)")
    add_api_options(p)


def _rauc_settings(args: Namespace) -> tuple[Path | None, Path, str]:
    """(system.conf or None, keyring, compatible) from the options and system.conf."""
    conf = Path(args.rauc_conf or DEFAULT_RAUC_CONF)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf)
    keyring = args.keyring or parser.get("keyring", "path", fallback="")
    if keyring and not Path(keyring).is_absolute():
        keyring = str(conf.parent / keyring)
    if not keyring:
        raise BranchlineError(f"{conf}: no [keyring] path; give --keyring PEM or install "
                              "RAUC's system.conf")
    compatible = (args.compatible or parser.get("system", "compatible", fallback="")
                  or DEFAULT_COMPATIBLE)
    return (conf if conf.exists() else None), Path(keyring), compatible


def systemctl_reboot(tryboot: bool) -> None:
    """Reboot; with tryboot the Pi firmware boots the [tryboot] section once."""
    argv = ["systemctl", "reboot", *(["0 tryboot"] if tryboot else [])]
    subprocess.run(argv, check=True, timeout=60)


def cmd_serve(args: Namespace) -> int:
    import signal
    import threading

    from firmware.api.client import ApiClient
    from firmware.update.rauc import Rauc
    from firmware.update.server import UpdateServer, default_socket
    from firmware.update.service import UpdateService
    from foundation.reactor import MonotonicClock

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    conf, keyring, compatible = _rauc_settings(args)
    address = api_address(args)
    service = UpdateService(Path(args.data_dir), Rauc(conf), lambda: ApiClient(**address),
                            MonotonicClock(), keyring=keyring, compatible=compatible,
                            reboot=systemctl_reboot, config_dir=_config_dir(args),
                            selftest=_selftest())
    server = UpdateServer(service, args.socket or default_socket())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    try:
        stop.wait()
    finally:
        server.stop()
        service.close()
    return 0


def _config_dir(args: Namespace) -> Path:
    from firmware.core.config import config_dir

    return config_dir(args.config_dir)


def _selftest() -> Selftest:
    """The live selftest of firmware.api (a client of the core like us)."""
    from firmware.api.selftest import selftest

    return selftest


def _client(args: Namespace) -> UpdateClient:
    from firmware.update.client import UpdateClient

    return UpdateClient(args.socket)


def render(state: dict[str, Any]) -> str:
    progress = f" {state.get('progress')}%" if state.get("phase") == "INSTALLING" else ""
    versions = (f" {state.get('version_from') or '?'} -> {state.get('version_to')}"
                if state.get("version_to") else "")
    reason = f" [{state['reason']}]" if state.get("reason") else ""
    return f"{state.get('phase')}{progress}{versions}{reason}: {state.get('message') or '-'}"


def cmd_install(args: Namespace) -> int:
    client = _client(args)
    path = str(Path(args.path).resolve())
    state = client.install(path, "console", force=args.force,
                           allow_downgrade=args.allow_downgrade)
    print(render(state), flush=True)
    last = render(state)
    while not args.no_wait and state.get("phase") not in DONE:
        time.sleep(POLL_S)
        state = client.status()
        if render(state) != last:
            last = render(state)
            print(last, flush=True)
    return 1 if state.get("phase") == "FAILED" else 0


def cmd_status(args: Namespace) -> int:
    state = _client(args).status()
    print(json.dumps(state, indent=1, sort_keys=True) if args.json else render(state))
    return 0


def cmd_cancel(args: Namespace) -> int:
    print(render(_client(args).cancel()))
    return 0


def cmd_confirm(args: Namespace) -> int:
    from firmware.api.client import ApiClient
    from firmware.core.config import ConfigStore
    from firmware.update.confirm import Confirm
    from firmware.update.health import Health, check_until, web_address
    from firmware.update.rauc import Rauc
    from firmware.update.state import StateFile
    from foundation.reactor import MonotonicClock

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    conf, _keyring, _compatible = _rauc_settings_loose(args)
    doc = ConfigStore(_config_dir(args)).load()
    timeout = args.timeout or (doc.get("update") or {}).get("health_timeout_s", 300)
    web = None if args.web == "none" else (args.web or web_address())
    api = ApiClient(**api_address(args))
    clock = MonotonicClock()

    def health(baseline: list[str]) -> list[Check]:
        return check_until(Health(api, web=web, selftest=_selftest(), baseline=baseline),
                           clock, float(timeout))

    state = Confirm(StateFile(Path(args.data_dir) / "update"), Rauc(conf), health,
                    systemctl_reboot, clock).run()
    print(render(state.to_json()))
    return 0


def _rauc_settings_loose(args: Namespace) -> tuple[Path | None, Path, str]:
    """confirm needs no keyring (it only marks slots)."""
    try:
        return _rauc_settings(args)
    except BranchlineError:
        conf = Path(args.rauc_conf or DEFAULT_RAUC_CONF)
        return (conf if conf.exists() else None), Path("/dev/null"), DEFAULT_COMPATIBLE
