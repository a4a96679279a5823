from django.apps import AppConfig


class RlEngineConfig(AppConfig):
    name = "rl_engine"
    verbose_name = "RL engine"
