"""The session engine (SESSION_ENGINE = "fleet.sessions"): Django's database sessions,
each row carrying its user's id, so a user's sessions can be ended at once."""

from typing import Any

from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.base_session import AbstractBaseSession


class SessionStore(DatabaseSessionStore):
    @classmethod
    def get_model_class(cls) -> type[AbstractBaseSession]:
        from fleet.models import UserSession

        return UserSession

    def create_model_instance(self, data: dict[str, Any]) -> AbstractBaseSession:
        session = super().create_model_instance(data)
        try:
            session.user_id = int(data[SESSION_KEY])  # type: ignore[attr-defined]
        except (KeyError, TypeError, ValueError):
            session.user_id = None  # type: ignore[attr-defined]
        return session


def user_sessions_end(user: User, *, keep: str | None = None) -> int:
    """Sign `user` out everywhere (but the session `keep`, the one acting): every other
    session of theirs is deleted, so its next request is anonymous. Returns how many."""
    from fleet.models import UserSession

    deleted, _ = UserSession.objects.filter(user_id=user.pk).exclude(session_key=keep).delete()
    return deleted
