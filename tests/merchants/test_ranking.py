"""The main parameters of ranking, weighed on a live policy, in pages and API."""

import pytest
from django.test import Client

from merchants.ranking import SCORE_PARTS, ranking_weights
from rl_engine.serving import live_policy
from tests.merchants.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_the_weights_of_the_live_policy_add_up_to_the_whole_score(live_version):
    live = live_policy.get()
    assert live.policy is not None

    weights = ranking_weights.get(live.policy, live.label)

    assert weights.policy_version == live_version.label
    assert weights.customers > 0
    assert [w.part.name for w in weights.weights] == [p.name for p in SCORE_PARTS]
    # The parts sum to the score, so their shares of its spread sum to one.
    assert sum(w.share for w in weights.weights) == pytest.approx(1.0, abs=1e-6)


def test_the_transparency_page_states_the_live_weights_to_anyone(live_version):
    response = Client().get("/transparency/")

    assert response.status_code == 200
    assert response.context["weights"].policy_version == live_version.label
    page = response.content.decode()
    for part in SCORE_PARTS:
        assert part.label in page
    # Only the rewards training learns from are stated as its rewards.
    assert [line.label for line in response.context["rewards"]] == [
        "The customer buys the product",
        "The customer sends it back (added to the purchase's reward)",
    ]
    assert "does not learn from them yet" in page


def test_a_merchant_reads_the_live_weights_through_the_api(live_version, shops):
    client = Client()
    assert client.login(username=shops.alice.username, password=PASSWORD)

    response = client.get("/api/v1/merchant/ranking")

    assert response.status_code == 200
    body = response.json()
    assert body["policy_version"] == live_version.label
    assert sum(w["share"] for w in body["weights"]) == pytest.approx(1.0, abs=1e-6)
