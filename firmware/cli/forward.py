"""`branchline forward`: deliver the outbox (CDRs, state changes, callbacks, recordings,
queued files) to the cloud's records URL, as a process of its own. Over HTTPS it shows
the device certificate (mutual TLS) once the box has one; with `cloud.broker` set it
uploads only the files, the agent carries the records over MQTT (see firmware.forward).

    branchline forward --data-dir /var/lib/branchline                # URL from the config
    branchline forward --data-dir /tmp/d --url http://127.0.0.1:8089/v1/records --once

Killing it loses nothing: what was sent but not marked delivered is sent again. With no
records URL configured it idles, re-reading the config, as the agent does without a
broker: a box without a records service is not a failing process for its supervisor."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.cli.apiopts import DEFAULT_DATA_DIR
from foundation.errors import BranchlineError

log = logging.getLogger("firmware.forward")
NO_URL = "no records URL"
IDLE_RECHECK_S = 30.0  # how often an idle forwarder re-reads the config for a URL

if TYPE_CHECKING:
    from firmware.core.config import Config
    from firmware.forward import Forwarder



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forward", help="deliver stored CDRs and events to the cloud",
                       description="Deliver the outbox (store and forward) to the cloud's "
                                   "records URL, in order, retrying while it is away.")
    p.add_argument("--data-dir", metavar="DIR", default=DEFAULT_DATA_DIR,
                   help=f"where the core keeps cdr.db and recordings/ (default: {DEFAULT_DATA_DIR})")
    p.add_argument("--url", metavar="URL", help="records URL (default: survive.records_url)")
    p.add_argument("--config-dir", metavar="DIR",
                   help="config directory (default: $BRANCHLINE_CONFIG_DIR or /etc/branchline)")
    p.add_argument("--once", action="store_true",
                   help="one pass, then exit 0 when the outbox is empty, 1 when rows remain")
    p.add_argument("--interval", metavar="S", type=float, default=2.0,
                   help="seconds between passes when all went out (default 2)")
    p.add_argument("--batch", metavar="N", type=int, default=50,
                   help="records per request (default 50)")
    p.add_argument("--timeout", metavar="S", type=float, default=10.0,
                   help="seconds to wait for the cloud's answer (default 10)")
    p.add_argument("--backoff-max", metavar="S", type=float, default=300.0,
                   help="longest wait between retries while the cloud fails (default 300)")
    p.add_argument("--ca-file", metavar="PEM", help="trust this CA or self-signed certificate")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the server's certificate (lab only)")
    p.add_argument("--cert", metavar="PEM", help="client certificate for mutual TLS "
                   "(default: the device certificate, once the box is enrolled)")
    p.add_argument("--key", metavar="PEM", help="its private key (with --cert)")
    p.add_argument("--files-only", action="store_true", default=None,
                   help="upload only the file rows (default: when cloud.broker is set, "
                        "the agent carries the records)")
    p.add_argument("--max-mb", metavar="MB", type=float, help="outbox cap in MB")
    p.add_argument("--box", metavar="NAME", help="box name sent along (default: system.name)")
    p.add_argument("--verbose", "-v", action="store_true", help="log every pass")
    p.set_defaults(func=cmd_forward)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config's survive section and box name, overridden by the options."""
    cfg = _config(args)
    survive = cfg.survive
    url = args.url or survive.records_url
    if not url:
        raise BranchlineError(f"{NO_URL}: set survive.records_url in the config "
                              "(branchline config set survive.records_url https://...) "
                              "or give --url")
    max_mb = args.max_mb if args.max_mb is not None else survive.outbox_max_mb
    files_only = args.files_only if args.files_only is not None else bool(cfg.cloud.broker)
    return {"url": url, "box": args.box or cfg.system.name,
            "ca_file": args.ca_file or survive.records_ca_file or None,
            "verify": not args.insecure and survive.records_tls_verify,
            "max_bytes": int(max_mb * 1024 * 1024) if max_mb else None,
            "keep_days": survive.outbox_keep_days, "files_only": files_only,
            "client": _client_files(args) if url.startswith("https:") else None}


def _settings_when_configured(args: argparse.Namespace,
                              stop: threading.Event) -> dict[str, Any] | None:
    """The settings; without a records URL (and no --url, not --once) idle until one is
    configured or we are stopped (None)."""
    said = False
    while True:
        try:
            return _settings(args)
        except BranchlineError as exc:
            if args.once or args.url or not str(exc).startswith(NO_URL):
                raise
            if not said:
                log.info("forward: idle, %s; the config is read again every %.0f s",
                         exc, IDLE_RECHECK_S)
                said = True
        if stop.wait(IDLE_RECHECK_S):
            return None


def _client_files(args: argparse.Namespace) -> tuple[str, str] | None:
    """(cert, key) for mutual TLS over https: the options, else the device certificate
    if the box has one (the server decides whether it requires it)."""
    if bool(args.cert) != bool(args.key):
        raise BranchlineError("--cert and --key go together: give both PEM files")
    if args.cert:
        return args.cert, args.key
    from firmware.agent.identity import DeviceIdentity

    files = DeviceIdentity(Path(args.data_dir)).client_files()
    return (str(files[0]), str(files[1])) if files else None


def _config(args: argparse.Namespace) -> Config:
    from firmware.core.config import Config, ConfigStore, config_dir, default_document
    from firmware.core.config.store import FILE_NAME

    directory = config_dir(args.config_dir)
    lab = args.url and args.config_dir is None and not (directory / FILE_NAME).exists()  # all in argv
    return Config.from_doc(default_document() if lab else ConfigStore(directory).load())


def cmd_forward(args: argparse.Namespace) -> int:
    from firmware.cdr import CDR_FILE, CdrStore
    from firmware.forward import Forwarder, HttpTransport, ssl_context

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s forward %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    s = _settings_when_configured(args, stop)
    if s is None:
        return 0
    db = Path(args.data_dir) / CDR_FILE
    transport = HttpTransport(s["url"], timeout=args.timeout, box=s["box"],
                              context=ssl_context(s["verify"], s["ca_file"]), client=s["client"])
    if s["files_only"]:
        log.info("forward: files only (the agent carries the records over MQTT)")
    with CdrStore(db, max_bytes=s["max_bytes"], synchronous="NORMAL") as store:
        fwd = Forwarder(store, transport, batch=args.batch, sleep=stop.wait,
                        backoff_max_s=args.backoff_max, keep_days=s["keep_days"],
                        files_only=s["files_only"])
        try:
            return _serve(fwd, args, stop, db, s["url"])
        finally:
            transport.close()


def _serve(fwd: Forwarder, args: argparse.Namespace, stop: threading.Event, db: Path,
           url: str) -> int:
    """One pass with --once; else deliver until SIGTERM / Ctrl-C."""
    if args.once:
        fwd.step(args.interval)
        left = fwd.left()
        print(f"branchline forward: delivered {fwd.delivered}, {left} pending"
              + (f" ({fwd.last_error})" if fwd.last_error else ""), flush=True)
        return 0 if left == 0 else 1
    print(f"branchline forward: delivering {db} to {url}", flush=True)
    fwd.run(args.interval, should_stop=stop.is_set)
    print(f"branchline forward: stopped; delivered {fwd.delivered}, "
          f"{fwd.left()} pending", flush=True)
    return 0
