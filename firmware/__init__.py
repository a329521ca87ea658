"""The gateway application above the hardware: config, call control, SIP, survivability,
technician access. Imports point one way: firmware -> drivers -> cext."""
