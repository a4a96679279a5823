"""Create the staff groups that the governance pages admit.

``reviewer`` works the review queue; ``governance-admin`` also handles
escalated items and creates or revokes overrides. Both may read every
governance and store model in the Django admin, which changes none of the
governance models (their writes go through ``governance.services``).
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

REVIEWER = "reviewer"
GOVERNANCE_ADMIN = "governance-admin"

GOVERNANCE_MODELS = ["auditrun", "flag", "reviewitem", "override", "governanceevent"]
STORE_MODELS = ["product", "customer", "merchant", "servedslate", "servedslateitem"]


def _permissions(apps, app_label, models):
    Permission = apps.get_model("auth", "Permission")
    return Permission.objects.filter(
        content_type__app_label=app_label,
        content_type__model__in=models,
        codename__startswith="view_",
    )


def create_staff_groups(apps, schema_editor):
    # Permissions are created after all migrations have run; make sure the
    # ones named below exist already on a fresh database.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    readable = list(_permissions(apps, "governance", GOVERNANCE_MODELS))
    readable += list(_permissions(apps, "commerce", STORE_MODELS))
    for name in (REVIEWER, GOVERNANCE_ADMIN):
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*readable)


def remove_staff_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name__in=[REVIEWER, GOVERNANCE_ADMIN]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("commerce", "0003_api_client"),
        ("governance", "0003_review_queue_and_overrides"),
    ]

    operations = [migrations.RunPython(create_staff_groups, remove_staff_groups)]
