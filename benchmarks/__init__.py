"""squid-mesh benchmarks: ``python -m benchmarks --store sqlite|postgres --scenario ...``."""
