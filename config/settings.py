"""Settings for the Agentina Control Plane.

Every value comes from the environment with a safe development default, so the same
code runs on the embedded default (SQLite, filesystem broker) and in production
(PostgreSQL, Redis) by environment variables alone. See the README's table.
"""

import contextlib
from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # runtime state of the embedded default; ignored by git
with contextlib.suppress(OSError):  # a read-only production image sets its own paths
    VAR_DIR.mkdir(exist_ok=True)

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# Without DEBUG a missing SECRET_KEY stops the process: a public key would let anyone forge
# sessions. `make run` sets DEBUG; production sets a long random SECRET_KEY.
SECRET_KEY = env.str(
    "SECRET_KEY",
    default="django-insecure-development-key-set-SECRET_KEY-in-production" if DEBUG else "",
)
if not SECRET_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY (a long random string), or DEBUG=true locally.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "ninja",
    "django_htmx",
    "template_partials",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "fleet",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.security.content_security_policy",
    "config.api.api_no_store_middleware",
    "config.api.api_error_body_middleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "fleet.login_throttle.known_browser_cookie",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "portal.second_factor.second_factor_gate",
    "portal.limits.portal_write_limit",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

# Sign-in under attack (portal and admin; the README's "Sign-in and lockouts"), every
# limit at the client address fleet.http.client_address reads (NUM_PROXIES, one rule
# everywhere): django-axes locks one (username, address) pair after LOGIN_FAILURE_LIMIT
# wrong passwords for LOGIN_LOCKOUT_MINUTES; fleet/login_throttle.py slows one username
# from every address, and one address trying any username, with doubling delays once
# their free failures are spent. A locked-out user unlocks themselves by email.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "fleet.login_throttle.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "fleet.http.client_address"
AXES_LOCKOUT_CALLABLE = "portal.views.lockout.locked_out"
# An attempt refused during a lockout is no new failure: a lockout ends its
# LOGIN_LOCKOUT_MINUTES after the wrong password that caused it, however often it is retried.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
LOGIN_ACCOUNT_FREE_FAILURES = env.int("LOGIN_ACCOUNT_FREE_FAILURES", default=10)
LOGIN_ADDRESS_FREE_FAILURES = env.int("LOGIN_ADDRESS_FREE_FAILURES", default=30)
LOGIN_DELAY_MAX_SECONDS = env.int("LOGIN_DELAY_MAX_SECONDS", default=900)
# Portal writes (POST, PUT, PATCH, DELETE) one signed-in user may make, counted in the cache.
PORTAL_WRITE_RATE = env.str("PORTAL_WRITE_RATE", default="60/min")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "builtins": ["template_partials.templatetags.partials"],
        },
    },
]

# Database: SQLite by default (WAL, IMMEDIATE transactions and a busy timeout, so web,
# worker and beat can write at once), PostgreSQL when DATABASE_URL says so.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
        ),
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not memory, so a Celery worker started by a test can share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
# Persistent connections on every database: a new PostgreSQL backend per request costs
# ~10 ms of CPU, and reopening SQLite reruns its PRAGMAs. Health checks are off: they cost
# a `SELECT 1` round trip before every request's first query (a fifth of a claim's time);
# without them, a connection the database dropped fails one request and is then replaced.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=False)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "portal:login"
# Sessions live in the database beside their user's id (fleet/sessions.py), so removing a
# member ends their sessions at once.
SESSION_ENGINE = "fleet.sessions"
# A password-reset link works once, for this long.
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT_SECONDS", default=3600)
# Two-factor sign-in (django-otp: an authenticator app, recovery codes). Staff must use it
# everywhere (portal and admin) unless this is off; it is off by default only under DEBUG,
# so `make run`'s demo staff login works without a phone.
STAFF_REQUIRE_2FA = env.bool("STAFF_REQUIRE_2FA", default=not DEBUG)
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Agentina")
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # the admin never shows a TOTP key or its QR code

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": env.str(
            "STATICFILES_BACKEND",
            default="whitenoise.storage.CompressedManifestStaticFilesStorage"
            if not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage",
        )
    },
}
# Release artifacts (the agent's signed archives): local files under RELEASE_ROOT by
# default; RELEASE_STORAGE=s3 keeps them in a bucket through django-storages (install the
# `s3` extra), configured by RELEASE_S3_* and the usual AWS_* credentials.
RELEASE_STORAGE = env.str("RELEASE_STORAGE", default="local")
RELEASE_ROOT = env.path("RELEASE_ROOT", default=VAR_DIR / "releases")
if RELEASE_STORAGE == "s3":
    STORAGES["releases"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("RELEASE_S3_BUCKET"),
            "location": env.str("RELEASE_S3_PREFIX", default="releases"),
            "endpoint_url": env.str("RELEASE_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("RELEASE_S3_REGION", default="") or None,
            "default_acl": "private",
            "file_overwrite": False,
        },
    }
elif RELEASE_STORAGE == "local":
    STORAGES["releases"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(RELEASE_ROOT), "file_permissions_mode": 0o644},
    }
else:
    raise ImproperlyConfigured("RELEASE_STORAGE is 'local' or 's3'.")
# The Ed25519 public key (base64 of its 32 raw bytes; `manage.py release_keygen` prints
# it) every published artifact's signature must verify against; agents pin it. Empty: no
# artifact can be published (releases without one still can).
RELEASE_PUBLIC_KEY = env.str("RELEASE_PUBLIC_KEY", default="")
RELEASE_MAX_BYTES = env.int("RELEASE_MAX_BYTES", default=200 * 1024 * 1024)

# Production hardening follows DEBUG, so `manage.py check --deploy` is clean as soon as
# DEBUG is off and a real SECRET_KEY is given.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# Celery: kombu's filesystem transport by default (no server needed), Redis in production.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_DIR = Path(env.str("CELERY_BROKER_DIR", default=str(VAR_DIR / "celery-broker")))
if CELERY_BROKER_URL.startswith("filesystem"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": 0.2,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 90
if not CELERY_BROKER_URL.startswith("filesystem"):
    # A task a killed worker held comes back after this long: more than the longest task
    # (its hard time limit; no task is scheduled with a countdown), so a running task is
    # never delivered twice (G10), and little more, so a lost one waits minutes, not an
    # hour. Every task is idempotent and periodic runs are claimed, so a redelivery is safe.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * CELERY_TASK_TIME_LIMIT + 60}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = env.str(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(VAR_DIR / "celerybeat-schedule")
)
STALE_SWEEP_SECONDS = env.int("STALE_SWEEP_SECONDS", default=30)
SNAPSHOT_SECONDS = env.int("SNAPSHOT_SECONDS", default=60)
ROLLOUT_ADVANCE_SECONDS = env.int("ROLLOUT_ADVANCE_SECONDS", default=60)
PRESENCE_FLUSH_SECONDS = env.int("PRESENCE_FLUSH_SECONDS", default=10)
ALERT_DELIVERY_SWEEP_SECONDS = env.int("ALERT_DELIVERY_SWEEP_SECONDS", default=10)


# Retention (fleet/services/retention.py; the README's table): how long each kind of row is
# kept. Minutes stay at least a day, since the dashboard's 24-hour charts read them.
RETAIN_MINUTE_SNAPSHOTS_HOURS = max(env.int("RETAIN_MINUTE_SNAPSHOTS_HOURS", default=48), 24)
RETAIN_HOURLY_ROLLUPS_DAYS = env.int("RETAIN_HOURLY_ROLLUPS_DAYS", default=90)
RETAIN_JOBS_DAYS = env.int("RETAIN_JOBS_DAYS", default=90)
RETAIN_AUDIT_DAYS = env.int("RETAIN_AUDIT_DAYS", default=400)
RETAIN_ANOMALIES_DAYS = env.int("RETAIN_ANOMALIES_DAYS", default=180)
RETAIN_ALERTS_DAYS = env.int("RETAIN_ALERTS_DAYS", default=30)
RETAIN_TOKENS_DAYS = env.int("RETAIN_TOKENS_DAYS", default=90)


def _every(task: str, seconds: int) -> dict:
    """A beat entry every `seconds`; a run still queued when the next is due is dropped."""
    return {
        "task": task,
        "schedule": timedelta(seconds=seconds),
        "options": {"expires": seconds * 0.9},
    }


CELERY_BEAT_SCHEDULE = {
    "mark-stale-agents": _every("fleet.mark_stale_agents", STALE_SWEEP_SECONDS),
    "take-snapshots": _every("fleet.take_snapshots", SNAPSHOT_SECONDS),
    "advance-rollouts": _every("fleet.advance_rollouts", ROLLOUT_ADVANCE_SECONDS),
    "flush-presence": _every("fleet.flush_presence", PRESENCE_FLUSH_SECONDS),
    "send-alerts": _every("fleet.send_due_alerts", ALERT_DELIVERY_SWEEP_SECONDS),
    "watch-licenses": _every("fleet.alert_licenses", 3600),
    "clean-up-stale-agents": _every("fleet.clean_up_stale_agents", 3600),
    # End of day for the digest: customers have no time zone of their own yet, so UTC.
    "anomalies-digest": {
        "task": "fleet.anomalies_daily_digest",
        "schedule": crontab(hour=23, minute=55),
        "options": {"expires": 3600},
    },
    "roll-up-and-prune": {
        "task": "fleet.roll_up_and_prune",
        "schedule": crontab(minute=7),
        "options": {"expires": 3000},
    },
    "expire-tokens": {
        "task": "fleet.expire_tokens",
        "schedule": crontab(hour=0, minute=5),
        "options": {"expires": 3600},
    },
}

# Cache: throttle counters live here, so several web processes need a shared one (Redis).
# The API works without it (throttles fail open), so a dead or frozen Redis must cost a
# short socket timeout, not a hung request: redis-py's default timeout is none at all.
CACHE_URL = env.str("CACHE_URL", default="locmemcache://")
CACHE_REDIS_OPTIONS = {"socket_connect_timeout": 0.25, "socket_timeout": 0.25}
if CACHE_URL.startswith("redis"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "OPTIONS": CACHE_REDIS_OPTIONS,
        }
    }
else:
    CACHES = {"default": env.cache_url_config(CACHE_URL)}

# The client address (fleet.http.client_address: the API's throttles, the sign-in limits,
# the audit log) comes from REMOTE_ADDR, or from the last NUM_PROXIES entries of
# X-Forwarded-For when that many trusted proxies stand in front (never the whole header).
NINJA_NUM_PROXIES = env.int("NUM_PROXIES", default=0)
API_THROTTLE_RATES = {
    "activate": env.str("API_ACTIVATE_RATE", default="30/min"),  # per client address
    "api_key": env.str("API_KEY_RATE", default="600/min"),  # per customer API key
}

# Fleet behaviour.
AGENT_ONLINE_WINDOW = timedelta(seconds=env.int("AGENT_ONLINE_WINDOW_SECONDS", default=180))
# The heartbeat interval grows with the fleet so that all of it beats at most
# AGENT_HEARTBEATS_PER_SECOND times a second, between the two bounds (jitter included).
AGENT_HEARTBEAT_SECONDS = env.int("AGENT_HEARTBEAT_SECONDS", default=30)
AGENT_HEARTBEAT_MAX_SECONDS = env.int("AGENT_HEARTBEAT_MAX_SECONDS", default=60)
AGENT_HEARTBEATS_PER_SECOND = env.int("AGENT_HEARTBEATS_PER_SECOND", default=2000)
# Agents of one customer reporting rate_limited or provider_error for one model provider
# at once that make one provider incident (a finding; fleet/services/activity.py).
PROVIDER_INCIDENT_AGENTS = max(env.int("PROVIDER_INCIDENT_AGENTS", default=3), 1)

# Hot paths. Each web process keeps what a heartbeat needs to know about an agent and
# re-reads what changed every AGENT_CACHE_POLL_SECONDS (so a revoked agent is refused
# everywhere within that); entries older than AGENT_CACHE_MAX_AGE_SECONDS are re-read
# anyway. With PRESENCE_BUFFER_URL (a Redis URL), steady heartbeats go to Redis (each
# process sends its batch every PRESENCE_BATCH_SECONDS) and are written to the database
# in bulk every PRESENCE_FLUSH_SECONDS; without it, or while Redis is unreachable, every
# heartbeat writes the database.
AGENT_CACHE_POLL_SECONDS = env.float("AGENT_CACHE_POLL_SECONDS", default=2.0)
AGENT_CACHE_MAX_AGE_SECONDS = env.int("AGENT_CACHE_MAX_AGE_SECONDS", default=3600)
AGENT_CACHE_MAX_ENTRIES = env.int("AGENT_CACHE_MAX_ENTRIES", default=250_000)
AGENT_CACHE_STALE_LIMIT_SECONDS = env.float("AGENT_CACHE_STALE_LIMIT_SECONDS", default=10.0)
PRESENCE_BUFFER_URL = env.str("PRESENCE_BUFFER_URL", default="")
PRESENCE_BATCH_SECONDS = env.float("PRESENCE_BATCH_SECONDS", default=0.5)
JOB_LEASE = timedelta(seconds=env.int("JOB_LEASE_SECONDS", default=300))
JOB_MAX_ATTEMPTS = env.int("JOB_MAX_ATTEMPTS", default=3)
THROUGHPUT_DROP_FRACTION = env.float("THROUGHPUT_DROP_FRACTION", default=0.3)
PORTAL_POLL_SECONDS = env.int("PORTAL_POLL_SECONDS", default=15)  # live numbers refresh
# GET /metrics (Prometheus): a customer API key scrapes its own fleet; this bearer token
# scrapes every customer's. Empty: no staff scrape.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# Alerts. Webhook, Slack and PagerDuty URLs may not resolve to private, loopback or
# link-local addresses (SSRF) unless ALERT_ALLOW_PRIVATE_NETWORKS (on-premises receivers;
# on with DEBUG, so `make run` can alert a local receiver). Webhook signing secrets are
# derived from ALERT_SIGNING_KEY and never stored: changing it changes every secret.
ALERT_ALLOW_PRIVATE_NETWORKS = env.bool("ALERT_ALLOW_PRIVATE_NETWORKS", default=DEBUG)
ALERT_SIGNING_KEY = env.str("ALERT_SIGNING_KEY", default=SECRET_KEY)
ALERT_TIMEOUT_SECONDS = env.float("ALERT_TIMEOUT_SECONDS", default=5.0)
ALERT_CHANNEL_MAX_PER_MINUTE = env.int("ALERT_CHANNEL_MAX_PER_MINUTE", default=20)
PAGERDUTY_EVENTS_URL = env.str(
    "PAGERDUTY_EVENTS_URL", default="https://events.pagerduty.com/v2/enqueue"
)
PORTAL_URL = env.str("PORTAL_URL", default="http://127.0.0.1:8000")  # links in alerts
# Mail (alert emails, the notice to owners of a disabled channel): the console under
# DEBUG, SMTP otherwise, e.g. EMAIL_URL=smtp+tls://user:password@smtp.example.com:587.
_EMAIL = env.email_url("EMAIL_URL", default="consolemail://" if DEBUG else "smtp://localhost:25")
EMAIL_BACKEND = _EMAIL["EMAIL_BACKEND"]
EMAIL_HOST = _EMAIL.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _EMAIL.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _EMAIL.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _EMAIL.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_EMAIL.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_EMAIL.get("EMAIL_USE_SSL"))
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Agentina <alerts@agentina.localhost>")

# Single sign-on: each customer's own OpenID Connect provider (portal/sso.py, with
# mozilla-django-oidc), set up by staff in the admin (Customer SSO). Its backend signs in
# only the provider's callback, never a password.
AUTHENTICATION_BACKENDS = [*AUTHENTICATION_BACKENDS, "portal.sso.CustomerOidcBackend"]
OIDC_AUTHENTICATION_CALLBACK_URL = "portal:sso_callback"
OIDC_RP_SCOPES = "openid email"
OIDC_TIMEOUT = env.int("SSO_TIMEOUT_SECONDS", default=10)  # each call to a provider
