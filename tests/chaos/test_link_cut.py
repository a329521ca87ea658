"""A real WAN cut: the box (a PjBridge) and the cloud (Kamailio + agents) in two network
namespaces joined by a veth pair; `ip link set cloud0 down` for 3 s and up again.

What is checked is the bridge-level fact survivability builds on: the SIP dialog of a
call in progress outlives a 3 s cut (no BYE, no ENDED), the media really stops during
the cut (the agent hears silence), and RTP resumes by itself when the link returns
(the agent measures the box's tone again, the box hears the same agent again). The
OPTIONS health check sees the cut within 2 s and the return within 1.5 s.

Skipped, with the reason, where the machine does not allow namespaces (not root, no
veth); CI runs as root.
"""

from __future__ import annotations

import time

from firmware.sip import api
from tests.chaos.conftest import box_doc, box_in
from tests.sip.conftest import ToneFeeder

CUT_S = 3.0


def _until(box, predicate, timeout: float) -> float:
    """Run the box's reactor until predicate() holds; the seconds it took."""
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, "condition not met in time"
        box.run(0.05)
    return time.monotonic() - t0


def test_call_survives_a_3s_link_cut_and_audio_resumes(netlink, netcloud):
    kam, agents = netcloud
    agent = agents["agent1"]
    box = box_in(netlink, box_doc(netlink, kam))
    try:
        box.wait(api.REGISTRATION, ok=True, timeout=5)
        box.wait(api.EDGE, ok=True, timeout=3)
        agent_call = agent.dial("2001")
        inc = box.wait(api.INCOMING, timeout=5)
        feeder = ToneFeeder(box, inc.call, 1000.0)
        box.bridge.answer(inc.call)
        box.wait(api.ANSWERED, inc.call)
        box.wait_agent_tone(agent, 1000.0, call=agent_call, timeout=5)
        _until(box, lambda: abs(feeder.measure()["hz"] - 440.0) <= 20, 3)

        cut_at = netlink.cut()
        box.wait(api.EDGE, ok=False, timeout=3)
        detect_s = time.monotonic() - cut_at
        box.run(max(0.0, cut_at + CUT_S - 0.3 - time.monotonic()))
        silent = agent.rx_tone(agent_call)  # the last second: all inside the cut
        assert silent["dbm0"] < -40.0, f"agent still heard {silent} during the cut"
        box.run(max(0.0, cut_at + CUT_S - time.monotonic()))
        restored_at = netlink.restore()

        box.wait_agent_tone(agent, 1000.0, call=agent_call, timeout=5)
        agent_resume_s = time.monotonic() - restored_at
        box_resume_s = _until(box, lambda: abs(feeder.measure(0.5)["hz"] - 440.0) <= 20, 5)
        box.wait(api.EDGE, ok=True, timeout=3)
        edge_back_s = time.monotonic() - restored_at

        assert api.ENDED not in box.kinds(inc.call)
        assert agent.call(agent_call)["state"] == "CONFIRMED"
        assert detect_s < 2.0, f"cut seen after {detect_s:.2f} s"
        # Loose bounds (a loaded CI machine): bench_survive reports the real figures.
        assert agent_resume_s < 4.0 and edge_back_s < 3.0 + agent_resume_s
        print(f"cut detected {detect_s:.2f} s; audio back at the agent {agent_resume_s:.2f} s,"
              f" at the box +{box_resume_s:.2f} s; edge back {edge_back_s:.2f} s")
        box.bridge.hangup(inc.call)
        box.wait(api.ENDED, inc.call, timeout=5)
    finally:
        box.stop()
