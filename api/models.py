"""API keys: how a student's bot signs its requests, stored only as a hash."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import User


class ApiKey(models.Model):
    """A bearer key for the REST API, shown once at creation and kept only as its SHA-256.

    The short public prefix is stored in clear so a request finds its key with one indexed
    lookup; the secret part never touches the database.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read only"
        TRADE = "trade", "Read and trade"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=Q(scope__in=["read", "trade"]), name="apikey_scope_known"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def can_trade(self) -> bool:
        return self.scope == self.Scope.TRADE

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at
