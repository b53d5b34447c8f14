"""The one settings module. Every knob comes from the environment (CONTRACT §11); DEBUG=0 is production."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG=0")
    SECRET_KEY = "dev-only-insecure-secret-key"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])

# Private keys at rest are encrypted with this Fernet key (identity app).
CIR_KEY_ENCRYPTION_KEY = env_str("CIR_KEY_ENCRYPTION_KEY")
if not DEBUG and not CIR_KEY_ENCRYPTION_KEY:
    raise ImproperlyConfigured("CIR_KEY_ENCRYPTION_KEY is required when DEBUG=0")
if CIR_KEY_ENCRYPTION_KEY:
    from cryptography.fernet import Fernet

    try:
        Fernet(CIR_KEY_ENCRYPTION_KEY.encode())
    except ValueError as exc:
        raise ImproperlyConfigured("CIR_KEY_ENCRYPTION_KEY must be a Fernet key (Fernet.generate_key())") from exc

CIR_ENTITY_ID = env_str("CIR_ENTITY_ID")
CIR_REQUIRE_HTTPS = env_bool("CIR_REQUIRE_HTTPS", not DEBUG)
CIR_TRUST_PROXY_HEADER = env_bool("CIR_TRUST_PROXY_HEADER", False)
CIR_RATE_LIMITS = (env_str("CIR_RATE_LIMITS", "on") or "on").strip().lower() not in {"off", "0", "false"}
CIR_METRICS_ALLOW = env_list("CIR_METRICS_ALLOW", ["127.0.0.0/8", "::1/128"])
CIR_RESOLVE_RATE = env_str("CIR_RESOLVE_RATE", "1200/min")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "import_export",
    "django_celery_beat",
    "core",
    "registry",
    "identity",
    "federation",
    "scheduling",
    "monitoring",
]

MIDDLEWARE = [
    "core.requestid.RequestIdMiddleware",  # X-Request-ID on every response (probes and errors too), access log
    "monitoring.middleware.MonitoringMiddleware",  # before the host check and HTTPS redirect: probes, request metrics
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # core.middleware: Django's session, CSRF, auth and messages middleware, stepping aside on /api/v1/
    # (bearer-token JSON routes that use none of them).
    "core.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "core.middleware.CsrfViewMiddleware",
    "core.middleware.AuthenticationMiddleware",
    "core.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False  # API routes have no trailing slash (CONTRACT §3)

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
            ]
        },
    }
]

_EMBEDDED_DB = BASE_DIR / "var" / "cir.sqlite3"
if not env_str("DATABASE_URL"):
    _EMBEDDED_DB.parent.mkdir(exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{_EMBEDDED_DB}",
        conn_max_age=60,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django binds parameters on the client and never prepares; the few fixed statements run on every
    # request (the resolve lookup: registry.selectors) bind on the server and are prepared after this many
    # runs per connection, so PostgreSQL plans them once. None turns that off (e.g. behind a pooler that
    # cannot keep prepared statements).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 2)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The same backend, with a connection health check that needs no round trip (core/backends).
    DATABASES["default"]["ENGINE"] = "core.backends.postgresql"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves a server, a sync loop or worker and commands at once: take the write
    # lock when a transaction starts (no lock-upgrade deadlocks) and let readers run beside a writer.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=30, transaction_mode="IMMEDIATE", init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_cache_url = env_str("CIR_CACHE_URL")
if _cache_url and _cache_url.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}}
elif _cache_url:
    raise ImproperlyConfigured("CIR_CACHE_URL must be a redis:// URL (or unset for the database cache)")
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cir_cache"}
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGE_COOKIE_SECURE = CIR_REQUIRE_HTTPS
LANGUAGE_COOKIE_SAMESITE = "Lax"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "var" / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# HTTPS (CONTRACT §11): on by default in production; loopback tests and demos turn it off.
if CIR_TRUST_PROXY_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = CIR_REQUIRE_HTTPS
SESSION_COOKIE_SECURE = CIR_REQUIRE_HTTPS
CSRF_COOKIE_SECURE = CIR_REQUIRE_HTTPS
SECURE_HSTS_SECONDS = 31536000 if CIR_REQUIRE_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = CIR_REQUIRE_HTTPS
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.StrictJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["identity.authentication.AccessTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["core.permissions.HasScope"],
    "EXCEPTION_HANDLER": "core.problems.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Compute Interconnection Registry API",
    "DESCRIPTION": "Unified Compute Resource Identifiers, resolution, discovery and provider writes.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Celery: a real broker in production; eager execution is the embedded default.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or None
CELERY_TASK_ALWAYS_EAGER = CELERY_BROKER_URL is None
# One queue per node when several nodes share a broker (tests, small labs): CIR_CELERY_QUEUE.
CELERY_TASK_DEFAULT_QUEUE = env_str("CIR_CELERY_QUEUE", "celery")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_RESULT_BACKEND = None
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# Logs (core/logs.py): one JSON object per line with the request id and the node, secrets redacted;
# CIR_LOG_FORMAT=plain for a person at a terminal.
CIR_LOG_FORMAT = (env_str("CIR_LOG_FORMAT", "json") or "json").strip().lower()
if CIR_LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured("CIR_LOG_FORMAT must be json or plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "core.logs.RedactingFilter"}},
    "formatters": {"json": {"()": "core.logs.JsonFormatter"}, "plain": {"()": "core.logs.PlainFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": CIR_LOG_FORMAT, "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own handlers (a plain console copy under DEBUG, mail to ADMINS) would bypass the JSON
        # format and the redaction: its records go to the root handler like every other.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": [], "level": "WARNING", "propagate": True},  # core.requestid logs access
    },
}

# Client addresses for rate limits: the socket peer, or the proxy's X-Forwarded-For entry behind one.
REST_FRAMEWORK["NUM_PROXIES"] = 1 if CIR_TRUST_PROXY_HEADER else 0

# Identity (CONTRACT §5, §6). Lifetimes are in seconds unless named in days.
CIR_SIGNING_ALG = env_str("CIR_SIGNING_ALG", "ES256")
CIR_JWKS_MAX_AGE = int(env_str("CIR_JWKS_MAX_AGE", "3600"))
CIR_ACCESS_TOKEN_LIFETIME = int(env_str("CIR_ACCESS_TOKEN_LIFETIME", "300"))
CIR_CREDENTIAL_LIFETIME_DAYS = int(env_str("CIR_CREDENTIAL_LIFETIME_DAYS", "30"))
CIR_CREDENTIAL_RENEW_BEFORE_DAYS = int(env_str("CIR_CREDENTIAL_RENEW_BEFORE_DAYS", "7"))
CIR_KEY_ROTATION_OVERLAP = int(env_str("CIR_KEY_ROTATION_OVERLAP", "86400"))
CIR_STATUS_LIST_TTL = int(env_str("CIR_STATUS_LIST_TTL", "300"))
CIR_STATUS_LIST_SIZE = int(env_str("CIR_STATUS_LIST_SIZE", "16384"))

CELERY_BEAT_SCHEDULE = {
    "rotate-node-keys": {"task": "identity.tasks.rotate_node_keys", "schedule": 3600.0},
    "renew-provider-credentials": {"task": "identity.tasks.renew_provider_credentials", "schedule": 3600.0},
    "refresh-status-lists": {"task": "identity.tasks.refresh_status_lists", "schedule": 600.0},
    "purge-idempotency-records": {"task": "identity.tasks.purge_idempotency_records", "schedule": 3600.0},
    "purge-seen-jtis": {"task": "identity.tasks.purge_seen_jtis", "schedule": 600.0},
}

# Federation: how identity learns other nodes' keys and scopes (client_id = entity ID, CONTRACT §6).
CIR_NODE_CLIENT_LOOKUP = "federation.peers.node_client"
CELERY_BEAT_SCHEDULE.update({
    "federation-pull": {"task": "federation.tasks.pull_due_subordinates", "schedule": 30.0},
    "federation-notify": {"task": "federation.tasks.notify_superior", "schedule": 10.0},
    "federation-refresh": {"task": "federation.tasks.refresh_peers", "schedule": 3600.0},
})
CIR_SYNC_PAGE_SIZE = int(env_str("CIR_SYNC_PAGE_SIZE", "500"))
CIR_MIRRORED_STATUS_LOOKUP = "federation.status.credential_status"
CELERY_BEAT_SCHEDULE["expire-handoffs"] = {"task": "scheduling.tasks.expire_handoffs", "schedule": 30.0}
CIR_HANDOFF_LIFETIME = int(env_str("CIR_HANDOFF_LIFETIME", "120"))
CELERY_BEAT_SCHEDULE["audit-checkpoint"] = {"task": "federation.tasks.sign_audit_checkpoint", "schedule": 30.0}
# Keeps the dashboard's indicators warm (cached 60 s): no page request waits for the national aggregates.
CELERY_BEAT_SCHEDULE["refresh-indicators"] = {"task": "registry.tasks.refresh_indicators", "schedule": 45.0}
