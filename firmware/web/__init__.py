"""The technician web page (`branchline web`): HTTPS on the LAN, a client of the core's
control API only. See server.py (HTTP, sessions, CSRF, headers), pages.py (the pages),
auth in firmware/auth.py (shared with the serial console), tls.py (the certificate).
"""
