"""The recommendation policy: a Django-free core and the Django layer around it."""
