"""A PjBridge in a process of its own, for the clean-exit test.

argv: a JSON config document and the number of calls to place to agent1/agent2. Prints
`UP n` once n calls are answered, then runs until SIGTERM, stops the bridge and exits 0.
Anything else (an abort in pjsua2 at exit) shows as a non-zero exit code.
"""

from __future__ import annotations

import json
import logging
import signal
import sys

from firmware.sip import api
from firmware.sip.pjbridge import PjBridge
from foundation.reactor import MonotonicClock, Reactor


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    doc, count = json.loads(sys.argv[1]), int(sys.argv[2])
    reactor = Reactor(MonotonicClock())
    bridge = PjBridge(reactor, doc)
    answered: set[int] = set()

    def on_event(ev: api.SipEvent) -> None:
        if ev.kind == api.ANSWERED:
            answered.add(ev.call)
            if len(answered) == count:
                print(f"UP {count}", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: reactor.call_soon(reactor.stop))
    bridge.start(on_event)
    for i in range(count):
        call = bridge.make_call("fxs1", f"agent{1 + i % 2}")
        bridge.media(call)  # ports attached too: they must also go away cleanly
    reactor.run_forever()
    bridge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
