"""The gateway benchmark's bookkeeping, on scripted sides: turns, pairing and the verdict."""

from __future__ import annotations

import itertools

from genfoundry.bench.gateway import BenchConfig, StreamTiming, _ttft_part, _verdict


def _side(ttfts_ms, calls):
    values = itertools.cycle(ttfts_ms)

    def run(i, short=False):
        calls.append((i, short))
        return StreamTiming(ttft_s=next(values) / 1000, decode_tps=50.0, tokens=8, seconds=0.2)
    return run


def test_short_question_ttft_is_the_median_of_paired_differences_after_a_warm_up_turn():
    calls = []
    # The warm-up turn (999 ms) is dropped; the gateway is 5 ms behind direct in every counted turn,
    # although the two sides' own medians differ by more (the turns' spread is not the gateway's).
    direct = _side([999, 40, 80, 41, 90, 42], calls)
    gateway = _side([999, 45, 85, 46, 95, 47], calls)
    cfg = BenchConfig(model_path="unused", ttft_runs=5, settle_s=0.0)
    part = _ttft_part({"direct_llama_cpp_python": direct, "gateway": gateway}, cfg)
    assert part["overhead_ms_p50"] == {"gateway": 5.0}
    assert part["ttft_ms"]["direct_llama_cpp_python"] == [40.0, 80.0, 41.0, 90.0, 42.0]
    assert part["ttft_ms_p50"] == {"direct_llama_cpp_python": 42.0, "gateway": 47.0}
    assert len(calls) == 12 and all(short for _, short in calls)
    assert len({i for i, _ in calls}) == 12, "every request asks a distinct question (no prompt cache)"


def test_the_verdict_judges_time_to_first_token_on_the_short_question_part():
    single = {"direct_llama_cpp_python": {"decode_tokens_per_s_p50": 50.0, "ttft_ms_p50": 70.0},
              "gateway": {"decode_tokens_per_s_p50": 49.0, "ttft_ms_p50": 99.0}}
    ttft = {"overhead_ms_p50": {"gateway": 6.5}}
    rounds = [{"aggregate_tokens_per_s": 90.0, "succeeded": 8, "requests": 8}]
    result = _verdict(BenchConfig(model_path="m"), single, ttft, {"gateway": rounds, "llama_server": rounds},
                      {"total_rss_mb": 1000.0}, None)
    assert result["checks"]["ttft_overhead_ms_p50"] == 6.5
    assert result["checks"]["decode_ratio_gateway_vs_direct"] == 0.98
    assert result["checks"]["aggregate_ratio_gateway_vs_llama_server"] == 1.0
    assert result["short_question_ttft"] is ttft
