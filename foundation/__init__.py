"""The foundation every layer stands on: the reactor and its clocks, the line-event
type, and the error types a technician can act on. It imports nothing of ours, so
`firmware`, `drivers` and `cext` may all use it."""
