"""Read: snapshots and (later) explanations, graphs and listings (read-only)."""
