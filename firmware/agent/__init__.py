"""The cloud management agent: the box's side of fleet management over MQTT 5.

Its own process (`branchline agent`), a client of the core's control API and event
stream only; see PROTOCOL.md in this package for the topics, payloads and flows.
"""
