"""Ledger entries: what transactional steps write through the ORM."""

from __future__ import annotations

from django.db import models


class Entry(models.Model):
    key = models.CharField(max_length=80, unique=True)
    amount = models.IntegerField(default=0)

    class Meta:
        app_label = "django_ledger"
