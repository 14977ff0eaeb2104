"""``manage.py squid_mesh_worker``."""
