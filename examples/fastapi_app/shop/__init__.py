"""A small shop on FastAPI whose orders and refunds are squid-mesh workflows."""
