"""The shop's own tables, written by the workflow's steps through the ORM."""

from __future__ import annotations

from django.db import models


class Product(models.Model):
    """A product and how many are left."""

    sku = models.CharField(max_length=40, unique=True)
    stock = models.PositiveIntegerField()


class Order(models.Model):
    """An order, and the run that fulfils it."""

    sku = models.CharField(max_length=40)
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=20, default="placed")
    run_id = models.CharField(max_length=36, blank=True)


class Reservation(models.Model):
    """Stock set aside for an order: written once, by the transactional step that takes it."""

    order = models.OneToOneField(Order, on_delete=models.CASCADE)
    quantity = models.PositiveIntegerField()
