"""Chat rendering for local models, and tool calls parsed back out."""

from __future__ import annotations

import json

import pytest

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.types import Message, ToolCall
from genfoundry.models.prompting import (
    TEMPLATES,
    forced_tool_schema,
    parse_tool_calls,
    render_chat,
    template_for,
)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The time."}}

CONVERSATION = [Message("system", "Be brief."), Message("user", "Hi"),
                Message("assistant", "Hello"), Message("user", "Weather?")]


def test_gemma_folds_system_into_first_user_turn():
    rendered = render_chat(CONVERSATION, TEMPLATES["gemma"])
    assert rendered.text == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nWeather?<end_of_turn>\n"
        "<start_of_turn>model\n")
    assert rendered.stop == ["<end_of_turn>", "<start_of_turn>"]


def test_chatml_has_a_system_turn():
    rendered = render_chat(CONVERSATION, TEMPLATES["chatml"])
    assert rendered.text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    assert rendered.text.endswith("<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n")
    assert rendered.text.count("Be brief.") == 1
    assert "<|im_end|>" in rendered.stop


def test_plain_template():
    rendered = render_chat(CONVERSATION, TEMPLATES["plain"])
    assert rendered.text == ("System: Be brief.\n\nUser: Hi\n\nAssistant: Hello\n\n"
                             "User: Weather?\n\nAssistant:")
    assert "\nUser:" in rendered.stop


def test_developer_messages_count_as_system():
    rendered = render_chat([Message("developer", "Rules."), Message("system", "More."),
                            Message("user", "Go")], TEMPLATES["gemma"])
    assert rendered.text.startswith("<start_of_turn>user\nRules.\n\nMore.\n\nGo<end_of_turn>\n")


def test_no_system_means_no_system_turn():
    rendered = render_chat([Message("user", "Hi")], TEMPLATES["chatml"])
    assert rendered.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_tools_are_described_in_the_prompt():
    rendered = render_chat([Message("user", "Weather in Rome?")], TEMPLATES["gemma"], tools=[WEATHER, TIME])
    first_turn = rendered.text.split("<end_of_turn>")[0]
    assert "- get_weather: Weather now. Parameters: " in first_turn
    assert json.dumps(WEATHER["function"]["parameters"]) in first_turn
    assert "- get_time: The time." in first_turn
    assert "<tool_call>" in first_turn
    assert first_turn.endswith("Weather in Rome?")


def test_assistant_tool_calls_and_tool_results_are_rendered():
    messages = [
        Message("user", "Weather in Rome?"),
        Message("assistant", None, tool_calls=[ToolCall("c1", "get_weather", '{"city": "Rome"}')]),
        Message("tool", "sunny, 24C", tool_call_id="c1", name="get_weather"),
    ]
    text = render_chat(messages, TEMPLATES["chatml"], tools=[WEATHER]).text
    assert ('<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}'
            "</tool_call><|im_end|>\n") in text
    assert "<|im_start|>user\nTool result (get_weather):\nsunny, 24C<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_tool_result_without_name_uses_the_call_id():
    text = render_chat([Message("tool", "42", tool_call_id="c9")], TEMPLATES["plain"]).text
    assert "Tool result (c9):\n42" in text


def test_parse_tool_calls_from_tags():
    text = ('Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
            '<tool_call>{"name": "get_time", "arguments": "{}"}</tool_call>')
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].arguments) == {"city": "Rome"}
    assert calls[1].arguments == "{}"  # string arguments are kept as they are
    assert all(c.id.startswith("call_") for c in calls)
    assert calls[0].id != calls[1].id


def test_text_without_tool_calls_is_left_alone():
    assert parse_tool_calls("Just an answer.") == ("Just an answer.", [])


def test_invalid_json_in_tags_is_ignored():
    text = "<tool_call>{not json}</tool_call>"
    assert parse_tool_calls(text) == (text, [])
    content, calls = parse_tool_calls(
        '<tool_call>{broken}</tool_call> <tool_call>{"name": "get_time", "arguments": {}}</tool_call>')
    assert [c.name for c in calls] == ["get_time"]
    assert content == ""  # the broken call is dropped from the content too


def test_forced_output_is_one_bare_json_object():
    content, [call] = parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Oslo"}}', forced=True)
    assert content == ""
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}


def test_forced_output_that_is_not_json_stays_text():
    assert parse_tool_calls('{"name": "get_weath', forced=True) == ('{"name": "get_weath', [])


def test_forced_tool_schema_for_one_tool():
    schema = forced_tool_schema([WEATHER], "required")
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"] == WEATHER["function"]["parameters"]
    assert schema["required"] == ["name", "arguments"]


def test_forced_tool_schema_for_several_tools():
    schema = forced_tool_schema([WEATHER, TIME], "required")
    names = [option["properties"]["name"]["const"] for option in schema["anyOf"]]
    assert names == ["get_weather", "get_time"]
    assert schema["anyOf"][1]["properties"]["arguments"] == {"type": "object"}


def test_forced_tool_schema_for_a_named_tool():
    schema = forced_tool_schema([WEATHER, TIME], {"type": "function", "function": {"name": "get_time"}})
    assert "anyOf" not in schema
    assert schema["properties"]["name"] == {"const": "get_time"}


def test_forced_tool_schema_named_tool_not_found():
    with pytest.raises(InvalidRequest, match="get_stock") as info:
        forced_tool_schema([WEATHER], {"type": "function", "function": {"name": "get_stock"}})
    assert info.value.param == "tool_choice"


@pytest.mark.parametrize("architecture, expected", [
    ("gemma3", "gemma"), ("Gemma2", "gemma"), ("qwen2", "chatml"), ("yi", "chatml"),
    ("llama", "plain"), (None, "plain"), ("", "plain"),
])
def test_template_for_architecture(architecture, expected):
    assert template_for(architecture).name == expected


def test_requested_template_wins():
    assert template_for("gemma3", "chatml").name == "chatml"


def test_unknown_requested_template():
    with pytest.raises(InvalidRequest) as info:
        template_for("gemma3", "alpaca")
    assert "alpaca" in info.value.message
    assert all(name in info.value.message for name in TEMPLATES)
