"""Groundedness: supported sentences pass, invented ones (changed numbers, new entities) are flagged."""

from __future__ import annotations

import numpy as np

from genfoundry.guard.groundedness import check_groundedness, split_sentences

PASSAGES = ["Backpacks carry a 10 year warranty against defects in materials and workmanship.",
            "Returns are accepted within 60 days of delivery for unused items in their original packaging.",
            "Standard shipping takes 3 to 5 business days; express shipping arrives the next business day."]
SUPPORTED = ["Backpacks have a 10 year warranty against defects [1].",
             "Unused items can be returned within 60 days of delivery.",
             "Express shipping arrives the next business day [3]."]
INVENTED = ["Returns are accepted within 90 days of delivery.",
            "Backpacks carry a 25 year warranty.",
            "The company was founded in Reykjavik by two sailors."]


def test_supported_and_invented_claims():
    report = check_groundedness(" ".join(SUPPORTED + INVENTED), PASSAGES)
    flags = {s.text: s.supported for s in report.sentences}
    assert all(flags[s] for s in SUPPORTED), report.to_dict()
    assert not any(flags[s] for s in INVENTED), report.to_dict()
    assert report.supported_share == 0.5
    assert report.filtered_answer() == " ".join(SUPPORTED)
    first = report.sentences[0]
    assert first.passage == 0 and first.cited == [1] and first.cited_supported is True


def test_a_wrong_citation_is_reported():
    report = check_groundedness("Backpacks have a 10 year warranty against defects [2].", PASSAGES)
    assert report.sentences[0].supported and report.sentences[0].cited_supported is False


def test_non_claims_are_not_judged_and_embeddings_can_help():
    report = check_groundedness("I could not find this in the documents.", PASSAGES)
    assert not report.sentences[0].claim and report.supported_share == 1.0

    def embed(texts):
        rows = np.ones((len(texts), 4), dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)
    assert check_groundedness(SUPPORTED[0], PASSAGES, embed=embed).sentences[0].supported


def test_odd_input():
    assert check_groundedness("", PASSAGES).sentences == []
    assert check_groundedness("Something was claimed here today.", []).sentences[0].supported is False
    assert split_sentences("One. Two! Three?\nFour") == ["One.", "Two!", "Three?", "Four"]
