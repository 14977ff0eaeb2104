"""Definition: the authoring DSL, validation, fingerprint, conditions, mapping (pure, no I/O)."""
