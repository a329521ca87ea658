"""Pure helpers for the SIP and SDP text the bridge reads and writes. pjsip has already
parsed and accepted the message: anything odd yields empty strings, not errors."""

from __future__ import annotations

import re

# RFC 3261 compact header forms that matter here.
_COMPACT = {"f": "from", "t": "to", "i": "call-id", "m": "contact", "v": "via"}
_URI_RE = re.compile(r"<([^>]*)>")
G711 = ("PCMU", "PCMA")
STATIC_PT = {"0": "PCMU", "8": "PCMA", "9": "G722"}  # RFC 3551 payload types
_USER_RE = re.compile(r"^(?:sips?|tel):(?:([^@;?]*)@)?([^;?>]*)", re.IGNORECASE)


def _head(msg: str) -> list[str]:
    return msg.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")[1:]


def header_lines(msg: str) -> list[tuple[str, str]]:
    """(lower-case name, value) of each header, continuation lines unfolded."""
    out: list[tuple[str, str]] = []
    for line in _head(msg):
        if line[:1] in (" ", "\t") and out:  # folded continuation of the previous header
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip().lower()
            out.append((_COMPACT.get(name, name), value.strip()))
    return out


def header(msg: str, name: str) -> str:
    want = name.lower()
    return next((v for n, v in header_lines(msg) if n == want), "")


def request_uri(msg: str) -> str:
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
    pairs = (line.partition(":") for line in _head(msg) if line[:1] not in (" ", "\t"))
    return [(name.strip(), value.strip()) for name, sep, value in pairs if sep]


def identity(number: str, name: str | None, domain: str) -> str:
    """'"Name" <sip:number@domain>' for From and P-Asserted-Identity."""
    uri = f"sip:{number}@{domain}"
    display = re.sub(r'["\\\r\n]', "", name or "")[:40]  # safe inside double quotes
    return f'"{display}" <{uri}>' if name else f"<{uri}>"


def target(to: str, domain: str) -> str:
    """A dialled number or URI as a SIP URI: a bare number goes to `domain`."""
    to = to.strip()
    if to.lower().startswith(("sip:", "sips:", "tel:")):
        return to
    return f"sip:{to}@{domain}"


def _rtpmaps(lines: list[str]) -> dict[str, str]:
    """Payload type -> encoding name (upper case)."""
    out = {}
    for line in lines:
        if line.startswith("a=rtpmap:"):
            pt, _, enc = line[len("a=rtpmap:"):].partition(" ")
            out[pt] = enc.split("/")[0].upper()
    return out


def _audio_sections(lines: list[str]) -> list[tuple[int, int]]:
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    bounds = [*starts, len(lines)]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False)
            if lines[a].startswith("m=audio ")]


def offers_g711(sdp: str) -> bool:
    lines = sdp.replace("\r\n", "\n").split("\n")
    for a, b in _audio_sections(lines):
        maps = _rtpmaps(lines[a:b])
        if any(maps.get(pt, STATIC_PT.get(pt)) in G711 for pt in lines[a].split()[3:]):
            return True
    return False


def g711_only(sdp: str) -> str | None:
    """The SDP with its audio sections cut to PCMU/PCMA (order kept), every other
    payload type's rtpmap/fmtp/rtcp-fb dropped (telephone-event, G.722...), and
    silenceSupp off (RFC 3108) plus gpmd vbd=yes (V.152) per G.711 payload type added.
    None when an audio section has no G.711 at all (nothing to offer)."""
    crlf = "\r\n" in sdp
    lines = sdp.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    done = 0
    for a, b in _audio_sections(lines):
        out += lines[done:a]
        section = _g711_section(lines[a:b])
        if section is None:
            return None
        out += section
        done = b
    out += lines[done:]
    text = "\n".join(out)
    return text.replace("\n", "\r\n") if crlf else text


def _g711_section(section: list[str]) -> list[str] | None:
    """One m=audio section cut to G.711, trailing blank lines kept."""
    trailing = []
    while section and not section[-1]:
        trailing.append(section.pop())
    maps = _rtpmaps(section)
    head = section[0].split()
    keep = [pt for pt in head[3:] if maps.get(pt, STATIC_PT.get(pt)) in G711]
    if not keep:
        return None
    out = [" ".join(head[:3] + keep)]
    for line in section[1:]:
        pt = _attr_pt(line)
        if pt is not None and pt not in keep:
            continue
        if line.startswith(("a=silenceSupp:", "a=gpmd:")):
            continue
        out.append(line)
    out.append("a=silenceSupp:off - - - -")
    out += [f"a=gpmd:{pt} vbd=yes" for pt in keep]
    return out + trailing


def _attr_pt(line: str) -> str | None:
    """The payload type an a=rtpmap / a=fmtp / a=rtcp-fb line is about (else None)."""
    for prefix in ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"):
        if line.startswith(prefix):
            return line[len(prefix):].split(" ", 1)[0]
    return None
