"""The box's update service: signed RAUC bundles into the other A/B slot, a trial boot
(the Pi's one-shot tryboot), a health check, then mark-good or roll back.

    version.py  the running release and version order     state.py   the persisted state
    rauc.py     the RAUC command line, refusals -> Reason  service.py policy and install
    health.py   the post-boot health check                 confirm.py trial -> good/rollback
    server.py   the Unix-socket JSON API                   client.py  its client
    tryboot.py, bootflags.py: RAUC's custom bootloader backend and the firmware's flags.

It imports foundation, firmware.api.client, firmware.core.config, firmware.cli.apiopts and
itself only: never call control, SIP or the drivers."""
