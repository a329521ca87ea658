"""The config store every process shares: schema, validation, versioned atomic storage.

    doc = ConfigStore(config_dir()).load()     # validated, defaults filled in
    store.save(doc, reason="...")              # validate, then atomic versioned write
    line_country(doc, "fxs1"), effective_ring_cadence(doc, "fxo1"), effective_callerid(...)

Bad input raises ConfigError (a BranchlineError) naming field path, value and rule.
"""

from firmware.core.config.rules import (
    effective_callerid,
    effective_ring_cadence,
    line_country,
    validate,
)
from firmware.core.config.schema import ConfigError, default_document
from firmware.core.config.store import ConfigStore, config_dir, load_file

__all__ = [
    "ConfigError",
    "ConfigStore",
    "config_dir",
    "default_document",
    "effective_callerid",
    "effective_ring_cadence",
    "line_country",
    "load_file",
    "validate",
]
