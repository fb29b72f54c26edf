"""Prompt rendering in the three formats, and the tolerant step parser (property-based)."""
import string

import pytest
from hypothesis import given, settings, strategies as st

from fireharness.records import Step
from methods import METHODS, AgentState, load_fewshot
from methods.parsing import parse_answer, parse_step
from methods.prompts import ALPACA_TEMPLATE, PromptError, strip_thoughts
from tasks.metrics import normalize_answer

Q = "Were Scott Derrickson and Ed Wood of the same nationality?"


def state_with_one_step():
    s = AgentState(key="k", index=0, question=Q)
    s.steps.append(Step(thought="I need to search Scott Derrickson.", action="search[Scott Derrickson]",
                        action_type="search", argument="Scott Derrickson", observation="Scott Derrickson is an American director."))
    return s


def make(method="react", prompt="react_hotpotqa_google", fmt="text", **kw):
    return METHODS.get(method)(fewshot=load_fewshot(prompt), fmt=fmt, **kw)


def test_text_format_is_fireacts():
    m = make()
    p = m.prompt(state_with_one_step())
    fewshot = load_fewshot("react_hotpotqa_google").text
    assert p == (fewshot + Q + "\nThought: I need to search Scott Derrickson.\nAction: search[Scott Derrickson]\n"
                 "Observation: Scott Derrickson is an American director.\nThought:")
    assert m.stop() == ["\nObservation"]


def test_react_paper_format_is_numbered():
    m = make(prompt="webthink_simple6")
    p = m.prompt(state_with_one_step())
    assert p.startswith("Solve a question answering task") and "(2) Lookup[keyword]" in p
    assert p.endswith(f"Question: {Q}\nThought 1: I need to search Scott Derrickson.\nAction 1: search[Scott Derrickson]\n"
                      "Observation 1: Scott Derrickson is an American director.\nThought 2:")
    assert m.verb("search") == "Search"


def test_alpaca_format_is_the_fine_tuned_models():
    m = make(fmt="alpaca", prompt="")
    p = m.prompt(AgentState(key="k", index=0, question=Q + "  \n"))
    assert p == ALPACA_TEMPLATE.format(instruction=Q) + "Thought:"
    assert p.startswith("Below is an instruction that describes a task.")


def test_chat_format_messages():
    m = make(fmt="chat")
    msgs = m.prompt(state_with_one_step())
    assert msgs[0]["role"] == "system" and "Here are some examples." in msgs[0]["content"]
    assert msgs[1:] == [{"role": "user", "content": Q},
                        {"role": "assistant", "content": "Thought: I need to search Scott Derrickson.\nAction: search[Scott Derrickson]"},
                        {"role": "user", "content": "Observation: Scott Derrickson is an American director."}]


def test_reflection_is_shown_before_the_thought():
    m = make("reflexion", reflect_at=(2,))
    s = state_with_one_step()
    assert m.needs_reflection(s)
    s.reflection = m.reflection_text(s, "I should search Ed Wood.")
    assert m.prompt(s).endswith("\nThought: " + s.reflection)
    step = Step(thought="Ed Wood next.", reflection=s.reflection)
    assert step.shown_thought().startswith("I have not found the answer after 1 steps") and step.shown_thought().endswith("Ed Wood next.")


def test_io_cot_act_prompts():
    io = make("io", "io_hotpotqa")
    assert io.prompt(AgentState(key="k", index=0, question=Q)).endswith(Q + "\nAnswer:")
    assert not io.uses_tools
    cot = make("cot", "cot_hotpotqa")
    assert cot.parse(" Both are American.\nAnswer: yes", None).argument == "yes"
    act = make("act", "webact_simple6")
    assert act.prompt(AgentState(key="k", index=0, question=Q)).endswith("Question: " + Q + "\nAction 1:")
    assert act.parse(" Search[Ed Wood]", None).verb == "search"
    assert "Thought" not in strip_thoughts(load_fewshot("react_hotpotqa_google").text)


def test_unknown_prompt_lists_valid_names():
    with pytest.raises(PromptError, match=r"unknown prompt 'react_hotpot'.*react_hotpotqa_google.*webthink_simple6"):
        load_fewshot("react_hotpot")


@pytest.mark.parametrize("text,verb,arg", [
    (" I need to search X.\nAction: search[X]", "search", "X"),
    ("Thought 2: hmm\nAction 2: Search[Milhouse]\nObservation 2: made up", "search", "Milhouse"),
    ("ACTION: FINISH[yes]", "finish", "yes"),
    ("I will search[Paris] now", "search", "Paris"),
    ("Action: search[a [b] c]\nAction: search[d]", "search", "a [b] c"),
    ("Action: search[unclosed", "search", "unclosed"),
    ("just thinking aloud", None, ""),
    ("Thought: x\nAction:", None, ""),
    ("action 3 : lookup[eastern sector]", "lookup", "eastern sector"),
])
def test_parse_step_cases(text, verb, arg):
    p = parse_step(text)
    assert (p.verb, p.argument) == (verb, arg)


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
_word = st.text(alphabet=string.ascii_letters + string.digits + " ,.'-", min_size=1, max_size=40).filter(lambda s: s.strip())


@settings(max_examples=400, deadline=None)
@given(_text)
def test_parser_never_raises(text):
    p = parse_step(text)
    assert p.verb is None or p.verb == p.verb.lower()
    parse_answer(text)
    normalize_answer(text)


@settings(max_examples=300, deadline=None)
@given(thought=_text.map(lambda t: t.replace("[", "").replace("]", "").replace("ction", "")),
       verb=st.sampled_from(["search", "Search", "LOOKUP", "finish", "Finish"]),
       arg=_word, trailer=_text, numbered=st.booleans())
def test_well_formed_action_is_recovered(thought, verb, arg, trailer, numbered):
    label = "Action 3:" if numbered else "Action:"
    p = parse_step(f"{thought}\n{label} {verb}[{arg}]\n{trailer}")
    assert p.verb == verb.lower()
    assert p.argument == " ".join(arg.split())
