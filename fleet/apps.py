from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from fleet.login_throttle import record_failed_sign_in, record_sign_in

        user_login_failed.connect(record_failed_sign_in, dispatch_uid="fleet.login_failed")
        user_logged_in.connect(record_sign_in, dispatch_uid="fleet.logged_in")
