"""SIP to the cloud platform: the bridge interface call control speaks to (`api`) and its
pjsua2 implementation, which keeps every pjsua2 call on one thread of its own."""
