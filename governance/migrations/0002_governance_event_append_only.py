"""Refuse UPDATE and DELETE on the governance log inside the database too."""

from django.db import migrations

FORBID_CHANGES = """
CREATE FUNCTION governance_event_forbid_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'governance events are append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER governance_event_append_only
BEFORE UPDATE OR DELETE ON governance_governanceevent
FOR EACH ROW EXECUTE FUNCTION governance_event_forbid_change();
"""

ALLOW_CHANGES = """
DROP TRIGGER governance_event_append_only ON governance_governanceevent;
DROP FUNCTION governance_event_forbid_change();
"""


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]

    operations = [migrations.RunSQL(FORBID_CHANGES, ALLOW_CHANGES)]
