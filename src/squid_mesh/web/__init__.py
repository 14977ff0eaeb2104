"""Operator web console (squid-mesh[web])."""
