"""The config every process shares: schema, validation, the typed view, versioned storage.

    doc = ConfigStore(config_dir()).load()     # validated, defaults filled in
    cfg = Config.from_doc(doc)                 # typed and frozen: cfg.sip, cfg.line("fxs1")
    store.save(doc, reason="...")              # validate, then atomic versioned write

Bad input raises ConfigError (a BranchlineError) naming field path, value and rule."""

from firmware.core.config.rules import (
    effective_callerid,
    effective_ring_cadence,
    line_country,
    validate,
)
from firmware.core.config.schema import ConfigError, default_document
from firmware.core.config.store import ConfigStore, config_dir, load_file
from firmware.core.config.typed import Config

__all__ = ["Config", "ConfigError", "ConfigStore", "config_dir", "default_document",
           "effective_callerid", "effective_ring_cadence", "line_country", "load_file",
           "validate"]
