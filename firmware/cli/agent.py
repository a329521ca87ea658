"""`branchline agent`: the cloud management agent (MQTT 5 to the fleet's broker) and its
enrolment steps.

    branchline agent run --api-socket /run/branchline/core.sock --data-dir /var/lib/branchline
    branchline agent identity [--csr FILE]         # the device id; the CSR to have signed
    branchline agent install-cert FILE [--ca FILE] # the signed certificate, the broker's CA
    branchline agent status                        # identity, broker, certificate

`run` hands firmware_update jobs' bundles to the update service (--update-socket).
`run` lasts until SIGTERM / Ctrl-C and may die at any time without touching a call: it is
a client of the core's control API only. The private key never leaves data_dir/agent/.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.cli.apiopts import DEFAULT_DATA_DIR, Subparsers, add_api_options, api_address
from firmware.cli.updateopt import add_update_option
from foundation.errors import BranchlineError

if TYPE_CHECKING:  # the agent's modules load only when a verb runs
    from firmware.agent.identity import DeviceIdentity

PEM_MAX_BYTES = 64 * 1024


def register(sub: Subparsers) -> None:
    p = sub.add_parser("agent", help="the cloud management agent (MQTT) and its enrolment",
                       description="Connect the box to the fleet's MQTT broker: desired and "
                                   "reported config, telemetry, CTI events, per-call quality, "
                                   "records, commands and jobs.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    run = verbs.add_parser("run", help="run the agent until SIGTERM")
    add_api_options(run)
    _data_dir(run)
    add_update_option(run)
    run.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    run.set_defaults(func=cmd_run)
    ident = verbs.add_parser("identity", help="print the device id; write the CSR to sign")
    _data_dir(ident)
    ident.add_argument("--csr", metavar="FILE",
                       help="write the certificate signing request here (default: stdout)")
    ident.set_defaults(func=cmd_identity)
    inst = verbs.add_parser("install-cert", help="install the signed device certificate")
    _data_dir(inst)
    inst.add_argument("cert", metavar="FILE", help="the device certificate (PEM) the CA signed")
    inst.add_argument("--ca", metavar="FILE", help="the broker's CA certificate (PEM), pinned")
    inst.set_defaults(func=cmd_install_cert)
    status = verbs.add_parser("status", help="identity, broker and certificate")
    add_api_options(status)
    _data_dir(status)
    status.set_defaults(func=cmd_status)


def _data_dir(p: ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", default=DEFAULT_DATA_DIR,
                   help=f"the box's data (identity in DIR/agent/; default: {DEFAULT_DATA_DIR})")


def _identity(args: Namespace) -> DeviceIdentity:
    from firmware.agent.identity import DeviceIdentity

    return DeviceIdentity(Path(args.data_dir))


def cmd_run(args: Namespace) -> int:
    from firmware.agent.app import Agent
    from firmware.api.client import ApiClient
    from firmware.update.version import running_version
    from foundation.clock import MonotonicClock

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s agent %(levelname)s %(name)s: %(message)s")
    api = ApiClient(**api_address(args))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent = Agent(api, Path(args.data_dir), MonotonicClock(), version=running_version(),
                  update_socket=args.update_socket)
    try:
        code = agent.run(stop.is_set)
    except OSError as exc:  # the data dir: nothing else the agent touches on disk raises here
        raise BranchlineError(f"--data-dir {args.data_dir}: {exc.strerror or exc} "
                              f"({exc.filename}); give a directory the agent may write") from None
    print("branchline agent: stopped", file=sys.stderr, flush=True)
    return code


def cmd_identity(args: Namespace) -> int:
    identity = _identity(args)
    identity.ensure_key()
    csr = identity.csr_pem()
    print(f"device id: {identity.device_id()}", file=sys.stderr if not args.csr else sys.stdout)
    if args.csr:
        Path(args.csr).write_bytes(csr)
        print(f"CSR written to {args.csr}: have the fleet's CA sign it, then run "
              "`branchline agent install-cert FILE --ca BROKER-CA`")
    else:
        sys.stdout.write(csr.decode())
    return 0


def _read_pem(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BranchlineError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    if len(data) > PEM_MAX_BYTES or b"-----BEGIN CERTIFICATE-----" not in data:
        raise BranchlineError(f"{what} {path}: not a PEM certificate (want "
                              "-----BEGIN CERTIFICATE-----)")
    return data


def cmd_install_cert(args: Namespace) -> int:
    identity = _identity(args)
    cert = _read_pem(args.cert, "certificate")
    ca = _read_pem(args.ca, "--ca") if args.ca else None
    installed = identity.install_certificate(cert)
    print(f"installed {installed} for device {identity.device_id()}")
    if ca is not None:
        path = identity.install_broker_ca(ca)
        print(f"broker CA pinned: {path}")
    return 0


def cmd_status(args: Namespace) -> int:
    from firmware.agent.app import cloud_of
    from firmware.api.client import ApiClient, ApiError

    identity = _identity(args)
    files = identity.client_files()
    ca = identity.broker_ca()
    try:
        cloud = cloud_of(ApiClient(**api_address(args), timeout=3.0).config())
        broker = cloud.broker or '"" (the agent idles: set cloud.broker)'
    except ApiError as exc:
        broker = f"unknown (the core does not answer: {exc})"
    rows = [("device id", identity.device_id()),
            ("certificate", str(files[0]) if files else "none installed "
             "(branchline agent identity, then install-cert)"),
            ("broker CA", str(ca) if ca else "none pinned (system CAs or cloud.ca_file)"),
            ("broker", broker)]
    for name, value in rows:
        print(f"{name:<12} {value}")
    return 0
