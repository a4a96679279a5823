"""The non-personalised flag: the same slate whatever the customer's history."""

import json
from typing import Any

import pytest

from commerce.models import ApiScope, EventKind, FeedbackEvent
from commerce.services import create_api_client
from rl_engine.services import promote_policy, train_policy_version
from rl_engine.serving import eligible_catalogue, live_policy, popularity

pytestmark = pytest.mark.django_db

SMALL = {
    "epochs": 1,
    "batch_size": 32,
    "max_actions": 16,
    "deterministic": True,
    "policy": {"hidden": 8, "sequence_length": 10, "max_history_items": 32},
}
K = 10
REGULAR, OTHER = "17850", "12553"
"""Two customers of the sample with different baskets (a UK regular's first
order and a French customer's)."""


@pytest.fixture
def live(import_file, sample_path, settings, tmp_path) -> Any:
    """The sample imported and a small policy trained on it, made live."""
    settings.POLICY_ARTIFACT_DIR = tmp_path / "policies"
    settings.POLICY_RELOAD_SECONDS = 0
    settings.CATALOGUE_CACHE_SECONDS = 0
    # Without exploration a slate depends on the scores alone.
    settings.SERVING_EXPLORATION = "greedy"
    import_file(sample_path)
    for cache in (eligible_catalogue, popularity):
        cache.clear()
    version = train_policy_version(config_overrides=SMALL)
    promoted = promote_policy(version=version, actor=None, reason="test", force=True)
    live_policy.refresh()
    yield promoted
    live_policy.refresh()


def ask(client: Any, key: str, customer: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/recommendations",
        json.dumps({"customer": customer, "k": K, **body}),
        content_type="application/json",
        headers={"Authorization": f"Api-Key {key}"},
    )
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def bought(customer: str) -> set[str]:
    return set(
        FeedbackEvent.objects.filter(
            customer__external_id=customer, kind=EventKind.PURCHASE
        ).values_list("product__external_id", flat=True)
    )


def test_two_customers_with_different_histories_get_one_slate_with_the_flag(
    client, live
):
    key = create_api_client(name="shop", scopes=[ApiScope.RECOMMENDATIONS]).key
    assert bought(REGULAR)
    assert bought(OTHER)
    assert bought(REGULAR) != bought(OTHER)

    profiled = {c: ask(client, key, c) for c in (REGULAR, OTHER)}
    plain = {c: ask(client, key, c, non_personalised=True) for c in (REGULAR, OTHER)}

    def skus(answer: dict[str, Any]) -> list[str]:
        return [item["product"] for item in answer["items"]]

    # Profiled, the policy ranks each customer's own history differently.
    for answer in profiled.values():
        assert answer["policy_version"] == live.label
        assert {item["reason"] for item in answer["items"]} == {"model"}
    assert skus(profiled[REGULAR]) != skus(profiled[OTHER])

    # With the flag, the same products in the same order, scores and all,
    # logged as not personalised: no policy version, every pick a fallback.
    assert plain[REGULAR]["items"] == plain[OTHER]["items"]
    assert len(plain[REGULAR]["items"]) == K
    for answer in plain.values():
        assert answer["policy_version"] == ""
        assert {item["reason"] for item in answer["items"]} == {"fallback"}
        assert [item["propensity"] for item in answer["items"]] == [1.0] * K
    # The shared slate is the popularity ranking: scores never rise.
    scores = [item["score"] for item in plain[REGULAR]["items"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > scores[-1]
    assert skus(plain[REGULAR]) == list(popularity.get().skus[:K])
