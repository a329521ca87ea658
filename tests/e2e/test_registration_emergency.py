"""Registration of the box's trunk (right and wrong password, as status shows it) and the
emergency route, which leaves through the PSTN line even with the cloud edge stopped.

Each test runs its own Core (one pjsua2 endpoint per process: the modules' shared boxes
are stopped by then, as they are module-scoped).
"""

from __future__ import annotations

import numpy as np
import pytest

from cext.dtmf import DtmfDetector
from lab.kamailio import Kamailio
from tests.e2e.conftest import ALIASES, USERS, Box, e2e_doc, sine, tone_of


@pytest.fixture
def own_box(tmp_path):
    boxes: list[Box] = []

    def make(doc) -> Box:
        box = Box(doc, tmp_path / f"data{len(boxes)}")
        boxes.append(box)
        return box.start()
    yield make
    for box in boxes:
        box.stop()


def test_trunk_registers_and_the_edge_answers_options(kamailio, own_box):
    box = own_box(e2e_doc(kamailio))
    box.until(box.registered, 10, "trunk registration")
    st = box.core.status()
    reg = st["registrations"]["branch@cloud.test"]
    assert reg["registered"] and reg["code"] == 200 and reg["line"] is None
    box.until(lambda: box.core.status()["edges"].get(kamailio.uri, {}).get("ok"), 5,
              "the edge's OPTIONS answered")
    assert box.core.status()["cloud_up"] and box.core.status()["no_cloud"] == ""


def test_wrong_password_is_a_clear_error_and_shows_unregistered(kamailio, own_box):
    box = own_box(e2e_doc(kamailio, password="not-the-password"))
    event = box.until(lambda: next((e for e in box.sip_events if e.kind == "registration"
                                    and not e.data["ok"]), None), 10, "a refused REGISTER")
    assert event.data["code"] == 403
    reason = event.data["reason"]
    assert "branch@cloud.test" in reason and "sip.password" in reason and "\n" not in reason
    reg = box.core.status()["registrations"]["branch@cloud.test"]
    assert reg["registered"] is False and reg["reason"] == reason


def test_emergency_call_goes_out_the_pstn_line_with_the_edge_stopped(tmp_path, own_box):
    kam = Kamailio(tmp_path / "kamailio", users=USERS, aliases=ALIASES)
    kam.start()
    try:
        box = own_box(e2e_doc(kam))
        box.until(box.registered, 10, "trunk registration")
    finally:
        kam.stop()
    box.until(lambda: not box.core.status()["cloud_up"], 5, "the edge seen down")
    heard_before = len(box.co().heard)
    box.dial("911")
    box.until(lambda: box.co().answered, 6, "the PSTN line seized")
    box.wait_state("fxs1", "CONNECTED", timeout=8)
    assert box.state("fxo1") == "CONNECTED"
    box.run(0.3)
    digits = "".join(d for d, _s, _e in DtmfDetector().process(
        np.asarray(box.co().heard[heard_before:])))
    assert digits == "911"
    box.co().play(sine(700.0, 2.0, amp=5000))  # the emergency operator speaks
    box.run(1.2)
    assert abs(tone_of(box.phone().heard)["hz"] - 700.0) < 15
    box.hang_up()
    box.wait_state("fxo1", "IDLE")
    cdr = box.until(lambda: next((c for c in box.cdrs() if c["ended"]), None), 5, "CDR")
    assert (cdr["direction"], cdr["dnis"], cdr["port"]) == ("emergency", "911", "fxs1")
