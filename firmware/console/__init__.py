"""The serial console (`console` process): a network-equipment style CLI on a tty, over
the control API (firmware.api.client) and firmware.auth (shared with the web page)."""
