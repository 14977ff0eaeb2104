"""Management commands of the squid-mesh Django app."""
