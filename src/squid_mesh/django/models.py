"""No Django models: squid-mesh's tables are its own (created by ``manage.py migrate``).

The module exists because Django signals ``post_migrate`` only to apps that have one.
"""
