"""Journal: fact types and the fold from facts to run state (pure, no I/O)."""
