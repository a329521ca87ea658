"""Process supervision on the box beside supervisord: the watchdog between the core's
health pings, supervisord and systemd's WatchdogSec (see watchdog.py)."""
