"""The built-in policy's PII defaults keep external models useful and personal data home.

A model cleared only for public data gets everyday questions about places,
organisations and dates as asked, while what identifies, reaches or locates a
person (names, contacts, cards, street addresses, postal codes, coordinates,
identifiers) never reaches it: it is tokenized into the vault.
"""

from __future__ import annotations

import asyncio

import pytest

from genfoundry.core.types import Message
from genfoundry.guard.engine import Guard
from genfoundry.guard.policy import load_policies
from genfoundry.guard.vault import Vault
from tests.conftest import fake_spec


@pytest.fixture(scope="module")
def warm_ner():
    from genfoundry.guard.pii import PiiDetector

    PiiDetector().warm_up()  # spaCy loads once for the module


@pytest.fixture()
def guard(settings, store, hub, warm_ner):
    hub.add(fake_spec("external", clearance="public"))
    policies, _ = load_policies(settings)  # the built-in default policy
    return Guard(policies=policies, store=store, hub=hub, vault=Vault(store, b"k" * 32))


def _seen(guard, text: str) -> str:
    screen = asyncio.run(guard.screen_input(call_id="c1", key=None, model="external",
                                            messages=[Message(role="user", content=text)]))
    assert screen.model == "external"
    return screen.messages[-1].content


@pytest.mark.parametrize("question", [
    "What is the capital of France?",
    "How far is Berlin from Munich by train?",
    "What did Microsoft announce in March 2023?",
    "Which rivers flow through Egypt and Sudan?",
    "Is French cuisine popular in Japan?",
])
def test_everyday_questions_about_places_reach_external_models_as_asked(guard, question):
    assert _seen(guard, question) == question


@pytest.mark.parametrize("text,secrets", [
    ("Please write to Jane Doe at jane.doe@example.com about her refund",
     ["Jane Doe", "jane.doe@example.com"]),
    ("Ship it to 742 Evergreen Terrace, Springfield, for Maria Garcia, zip code 62704",
     ["742 Evergreen Terrace", "Maria Garcia", "62704"]),
    ("My home is at 48.8584, 2.2945; call me on +44 20 7946 0958", ["48.8584, 2.2945", "+44 20 7946 0958"]),
    ("Card 4111 1111 1111 1111, SSN 078-05-1120", ["4111 1111 1111 1111", "078-05-1120"]),
    ("I live at 221b Baker Street, London NW1 6XE", ["221b Baker Street", "NW1 6XE"]),
])
def test_personal_data_never_reaches_a_public_model(guard, text, secrets):
    seen = _seen(guard, text)
    for secret in secrets:
        assert secret not in seen, f"{secret!r} leaked: {seen!r}"
    assert "<" in seen  # replaced by tokens or type tags


def test_a_street_address_inside_a_place_name_is_still_found(warm_ner):
    from genfoundry.guard.pii import PiiDetector

    text = "Deliver to 12 Oak Street, Springfield."
    wanted = {"STREET_ADDRESS", "ZIP_CODE", "PERSON"}
    found = {(f.kind, text[f.start:f.end]) for f in PiiDetector().check(text, wanted)}
    assert ("STREET_ADDRESS", "12 Oak Street") in found
