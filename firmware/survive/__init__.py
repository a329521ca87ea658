"""Survivable call continuity (issue 5): keep the branch's calls when the WAN fails.

  state.py       health of the cloud edges (OPTIONS, registration, RTP) and the state
                 machine CLOUD_PRIMARY -> CLOUD_SECONDARY -> SURVIVABLE and back, with
                 hysteresis; every transition logged, counted and queued to the outbox
  continuity.py  what call control does with it: hold tone on a blip, the cloud leg of
                 a PSTN caller re-routed locally, reorder for a phone, outage dial rules,
                 handback of queued callers, moving to the secondary edge
  fallback.py    one PSTN caller's local fallback chain: headset, hunt group with
                 cascaded ringing, queue with music on hold, callback capture
  prompts.py     the generated audio of all that (tones, chimes, melody, digits)

Everything runs on the reactor thread and reads only the reactor clock. The fake-time
figures of the benchmark are built in bench/survive_sim.py (it needs lab.simcloud).
"""
