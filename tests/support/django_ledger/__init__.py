"""A one-model Django app for tests/integration/test_django.py (its table is made by the test)."""
