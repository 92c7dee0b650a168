from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models


class UserSession(AbstractBaseSession):
    """Django's database session with the id of its signed-in user beside it, so ending a
    user's sessions (a removed member) is one indexed DELETE instead of decoding them all."""

    user_id = models.IntegerField(null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = "session"
        verbose_name_plural = "sessions"

    @classmethod
    def get_session_store_class(cls) -> type:
        from fleet.sessions import SessionStore

        return SessionStore
