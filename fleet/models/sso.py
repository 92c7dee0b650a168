from django.conf import settings
from django.db import models

from fleet.choices import MemberRole
from fleet.models.tenancy import Customer


class CustomerSso(models.Model):
    """A customer's OpenID Connect provider: its members sign in there, and someone the
    provider vouches for becomes a member at `default_role` on first sign-in. Staff set
    it up in the admin; the client secret is needed to talk to the provider, so it is
    stored as given and never shown again."""

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="sso")
    issuer = models.URLField(
        max_length=500,
        help_text="The provider's issuer URL; its /.well-known/openid-configuration is read.",
    )
    client_id = models.CharField(max_length=255)
    client_secret = models.CharField(max_length=500)
    default_role = models.CharField(
        max_length=16,
        choices=MemberRole.choices,
        default=MemberRole.VIEWER,
        help_text="The role of someone signing in for the first time; owners change it later.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "customer SSO (OpenID Connect)"
        verbose_name_plural = "customer SSO (OpenID Connect)"

    def __str__(self) -> str:
        return f"{self.customer} via {self.issuer}"


class SsoIdentity(models.Model):
    """Who a customer's provider says signed in (its `sub`), and the user that is here.
    Matched by subject within the customer, never by email: a provider vouches for its
    own people only, so it can never sign in as a user it did not create."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    subject = models.CharField(max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identities"
    )
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "SSO identity"
        verbose_name_plural = "SSO identities"
        constraints = [
            models.UniqueConstraint(fields=["customer", "subject"], name="sso_identity_subject")
        ]

    def __str__(self) -> str:
        return f"{self.email or self.subject} ({self.customer})"
