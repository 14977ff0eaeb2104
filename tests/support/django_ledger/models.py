"""Ledger entries: what transactional steps write through the ORM."""

from __future__ import annotations

from django.db import models


class Entry(models.Model):
    key = models.CharField(max_length=80, unique=True)
    amount = models.IntegerField(default=0)

    class Meta:
        app_label = "django_ledger"


class Line(models.Model):
    # Django declares foreign keys DEFERRABLE INITIALLY DEFERRED: checked when the transaction
    # commits, not when the row is written.
    entry = models.ForeignKey(Entry, on_delete=models.CASCADE)

    class Meta:
        app_label = "django_ledger"
