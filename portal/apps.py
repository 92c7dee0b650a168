from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Customer portal"

    def ready(self) -> None:
        from portal import second_factor  # noqa: F401  (connects its user_logged_in receiver)
