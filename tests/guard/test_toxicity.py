"""The toxicity lexicon: categories, obfuscation, and ordinary phrases left alone."""

from __future__ import annotations


import pytest

from genfoundry.guard.toxicity import ToxicityDetector

detector = ToxicityDetector()


@pytest.mark.parametrize(("text", "kind"), [
    ("you are a worthless idiot", "insult"), ("you 1d10t", "insult"), ("s t u p i d bot", "insult"),
    ("I will kill you", "threat"), ("I know where you live", "threat"), ("f*ck off", "profanity"),
    ("go back to your country", "hate"), ("I want to end my life", "self_harm"),
])
def test_categories(text, kind):
    assert kind in {f.kind for f in detector.check(text)}


@pytest.mark.parametrize("text", [
    "kill the process and restart the server", "shoot me an email when you are done", "I live in Scunthorpe",
    "the assessment is due on Monday", "this is a killer feature", "the cocktail menu", "the deadline moved",
    "kill all processes before the upgrade", "graduated magna cum laude",
])
def test_ordinary_phrases_pass(text):
    assert detector.check(text) == []


def test_threshold_drops_mild_categories():
    # Speed is measured by `genfoundry bench guard`, not asserted here on a shared machine.
    assert ToxicityDetector(threshold=0.6).check("this is shit") == []
    assert [f.kind for f in ToxicityDetector(threshold=0.4).check("this is shit")] == ["profanity"]
    text = "We reviewed the quarterly report and the returns policy for damaged goods. " * 40
    assert detector.check(text) == []
    assert detector.check("") == [] and detector.check("\x00\xff") == []
