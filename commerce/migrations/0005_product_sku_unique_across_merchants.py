"""Make a SKU unique across the deployment instead of per merchant.

A deployment serves one shop, whose merchants are its sellers: the shop API's
events and slates, and the policy's item vocabulary, name a product by SKU
alone. The unique index on the SKU also serves every lookup by SKU, so the
plain index that did is dropped. Queries by merchant keep the foreign key's
index and the eligible-catalogue index.

A database holding a SKU under two merchants cannot take the constraint; the
migration then stops before changing anything and names those SKUs, which
must be renamed or merged first.
"""

from django.db import migrations, models

SHOWN_SKUS = 20


def refuse_shared_skus(apps, schema_editor):
    Product = apps.get_model("commerce", "Product")
    Merchant = apps.get_model("commerce", "Merchant")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT p.external_id, array_agg(m.external_id ORDER BY m.external_id)
            FROM {Product._meta.db_table} p
            JOIN {Merchant._meta.db_table} m ON m.id = p.merchant_id
            GROUP BY p.external_id
            HAVING count(*) > 1
            ORDER BY p.external_id
            """
        )
        shared = cursor.fetchall()
    if shared:
        listed = "; ".join(
            f"{sku} ({', '.join(merchants)})" for sku, merchants in shared[:SHOWN_SKUS]
        )
        raise RuntimeError(
            f"A SKU must name one product, but {len(shared)} belong to more than "
            "one merchant: rename or merge them, then migrate again. "
            f"The first: {listed}."
        )


class Migration(migrations.Migration):
    dependencies = [("commerce", "0004_merchant_members")]

    operations = [
        migrations.RunPython(refuse_shared_skus, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="product", name="product_unique_sku"),
        migrations.RemoveIndex(model_name="product", name="product_sku_idx"),
        migrations.AddConstraint(
            model_name="product",
            constraint=models.UniqueConstraint(
                fields=("external_id",), name="product_unique_sku"
            ),
        ),
    ]
