"""Virtual lab for the demo and the tests: simulated cloud edge and agents, WAN chaos proxy."""
