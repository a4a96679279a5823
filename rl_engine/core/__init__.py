"""Django-free core: the offline next-basket protocol, its metrics and baselines."""
