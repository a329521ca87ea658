"""Hardware access for the gateway and its simulated twins.

The reactor, clocks, line events and errors are in `foundation`, below this package.
`drivers.bus` holds the three small interfaces chips are driven through (SPI, GPIO,
PCM), each with a real implementation and a simulated one; `drivers.chips` one module
per chip; `drivers.sim` the register-level emulators, the virtual central office and
the virtual phones. Nothing here imports `firmware` or `lab`.
"""
