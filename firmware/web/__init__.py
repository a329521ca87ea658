"""The technician web page (`branchline web`): HTTPS on the LAN, a client of the core's
control API only. server.py (Flask on cheroot: sessions, CSRF, headers), pages.py and
templates/ (the pages), relay.py (the dashboard's event feed), tls.py (the certificate)."""
