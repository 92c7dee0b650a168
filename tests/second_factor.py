"""An authenticator app for tests: a confirmed TOTP device and the codes it shows."""

import time

from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice


def authenticator(user, **kwargs) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True, **kwargs)


def authenticator_code(device_or_key, steps_ahead: int = 0) -> str:
    """The code the app shows now (or `steps_ahead` 30-second steps from now: a code
    already used cannot be used again, the next step's can, within the tolerance)."""
    if isinstance(device_or_key, TOTPDevice):
        key = device_or_key.bin_key
    else:  # the key as the setup page shows it: base32 in groups
        import base64

        key = base64.b32decode(device_or_key.replace(" ", ""))
    totp = TOTP(key, step=30, t0=0, digits=6, drift=0)
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"
