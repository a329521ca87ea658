"""Survivable call continuity: keep the branch's calls when the WAN fails. state.py judges
the cloud edges (CLOUD_PRIMARY -> CLOUD_SECONDARY -> SURVIVABLE and back), continuity.py is
what call control does about it, fallback.py one PSTN caller's local chain (headset, hunt
group, queue, callback), prompts.py their audio. All on the reactor thread and clock."""
