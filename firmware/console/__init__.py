"""The serial console (`console` process): a network-equipment style CLI on a tty.

lineedit.py  the line editor over raw serial bytes (echo, history, ?, TAB)
grammar.py   the command tree: unique-prefix words, ? help, TAB completion
commands.py  the commands of exec and configure mode and their handlers
confpath.py  dotted config paths: completion, schema help, typed values
views.py     text views of the control API's answers
session.py   one technician's session: login/setup code, modes, pending changes
corelink.py  the control API client the console talks through
app.py       the serial port loop: open, serve, reopen with backoff

Assumes the core's control API (firmware/api) is the only way to the box's state, and
firmware.auth.Auth (shared with the web page) holds the account.
"""
