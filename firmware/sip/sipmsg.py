"""Small, pure helpers for the SIP text the bridge reads and writes.

pjsua2 hands us whole messages as text (`SipRxData.wholeMsg`) rather than parsed
headers, and takes extra headers as name/value pairs. These functions read what call
control needs from an INVITE (caller number and name, DNIS, X- headers, P-Asserted-
Identity) and build the URIs we send. They assume well-formed enough text: pjsip has
already parsed and accepted the message; anything odd yields empty strings, not errors.
"""

from __future__ import annotations

import re

# RFC 3261 compact header forms that matter here.
_COMPACT = {"f": "from", "t": "to", "i": "call-id", "m": "contact", "v": "via"}
_URI_RE = re.compile(r"<([^>]*)>")
_USER_RE = re.compile(r"^(?:sips?|tel):(?:([^@;?]*)@)?([^;?>]*)", re.IGNORECASE)


def header_lines(msg: str) -> list[tuple[str, str]]:
    """(lower-case name, value) of each header, continuation lines unfolded."""
    head = msg.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")[1:]
    out: list[tuple[str, str]] = []
    for line in head:
        if line[:1] in (" ", "\t") and out:  # folded continuation of the previous header
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip().lower()
            out.append((_COMPACT.get(name, name), value.strip()))
    return out


def header(msg: str, name: str) -> str:
    """The first value of header `name` (any case), or ""."""
    want = name.lower()
    return next((v for n, v in header_lines(msg) if n == want), "")


def request_uri(msg: str) -> str:
    """The Request-URI of a request's first line, or ""."""
    first = msg.split("\n", 1)[0].split()
    return first[1] if len(first) == 3 and not first[0].startswith("SIP/") else ""


def name_addr(value: str) -> tuple[str, str]:
    """('Display Name', 'sip:user@host') of a From/To/PAI value."""
    match = _URI_RE.search(value)
    if not match:
        return "", value.split(";", 1)[0].strip()
    display = value[: match.start()].strip().strip('"').strip()
    return display, match.group(1).strip()


def uri_user(uri: str) -> str:
    """The user part of a sip:/sips:/tel: URI ('' if none)."""
    match = _USER_RE.match(uri.strip())
    if not match:
        return ""
    if uri.strip().lower().startswith("tel:"):
        return match.group(2)
    return match.group(1) or ""


def uri_hostport(uri: str) -> str:
    """'host:port' (or 'host') of a SIP URI, lower-cased, without parameters."""
    match = _USER_RE.match(uri.strip())
    return match.group(2).lower() if match else ""


def caller(msg: str) -> dict:
    """What call control needs from an INVITE: number, name, DNIS and the headers."""
    pai = header(msg, "p-asserted-identity")
    from_display, from_uri = name_addr(header(msg, "from"))
    pai_display, pai_uri = name_addr(pai) if pai else ("", "")
    extra = {n: v for n, v in _original_names(msg) if n.lower().startswith("x-")}
    if pai:
        extra["P-Asserted-Identity"] = pai
    return {
        "from_number": uri_user(pai_uri) or uri_user(from_uri),
        "from_name": from_display or pai_display,
        "to_number": uri_user(request_uri(msg)) or uri_user(name_addr(header(msg, "to"))[1]),
        "headers": extra,
    }


def _original_names(msg: str) -> list[tuple[str, str]]:
    """Headers with their names as sent (X- headers are passed on as written)."""
    head = msg.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")[1:]
    pairs = (line.partition(":") for line in head if line[:1] not in (" ", "\t"))
    return [(name.strip(), value.strip()) for name, sep, value in pairs if sep]


def quote_display(name: str) -> str:
    """A display name safe inside double quotes."""
    return re.sub(r'["\\\r\n]', "", name)[:40]


def identity(number: str, name: str | None, domain: str) -> str:
    """'"Name" <sip:number@domain>' for From and P-Asserted-Identity."""
    uri = f"sip:{number}@{domain}"
    return f'"{quote_display(name)}" <{uri}>' if name else f"<{uri}>"


def target(to: str, domain: str) -> str:
    """A dialled number or URI as a SIP URI: a bare number goes to `domain`."""
    to = to.strip()
    if to.lower().startswith(("sip:", "sips:", "tel:")):
        return to
    return f"sip:{to}@{domain}"
