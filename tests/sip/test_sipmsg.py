"""The SIP text helpers: caller, DNIS and headers read from an INVITE; URIs we build."""

from firmware.sip import sipmsg

INVITE = (
    "INVITE sip:8005550100@10.0.0.5:5060;transport=udp SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
    'f: "Front Desk" <sip:201@cloud.test>;tag=1\r\n'
    "To: <sip:8005550100@cloud.test>\r\n"
    'P-Asserted-Identity: "Ada Lovelace" <sip:+15551234@cloud.test>\r\n'
    "X-Branchline-Line: fxo1\r\n"
    "X-Long: first\r\n second\r\n"
    "Content-Length: 0\r\n\r\n"
)


def test_caller_prefers_pai_number_and_from_display():
    got = sipmsg.caller(INVITE)
    assert got["from_number"] == "+15551234"
    assert got["from_name"] == "Front Desk"
    assert got["to_number"] == "8005550100"
    assert got["headers"]["X-Branchline-Line"] == "fxo1"
    assert got["headers"]["P-Asserted-Identity"].startswith('"Ada Lovelace"')


def test_folded_and_compact_headers():
    assert sipmsg.header(INVITE, "x-long") == "first second"
    assert sipmsg.header(INVITE, "From").startswith('"Front Desk"')


def test_uris():
    assert sipmsg.uri_user("tel:+4420") == "+4420"
    assert sipmsg.uri_user("sip:127.0.0.1:5060") == ""
    assert sipmsg.uri_hostport("sip:a@Edge.Example:5070;lr") == "edge.example:5070"
    assert sipmsg.target("911", "cloud.test") == "sip:911@cloud.test"
    assert sipmsg.target("sip:x@y", "cloud.test") == "sip:x@y"
    assert sipmsg.identity("555", 'Bad "Name"', "d") == '"Bad Name" <sip:555@d>'
    assert sipmsg.identity("555", None, "d") == "<sip:555@d>"


def test_odd_text_gives_empty_strings():
    assert sipmsg.caller("garbage") == {"from_number": "", "from_name": "", "to_number": "",
                                        "headers": {}}
