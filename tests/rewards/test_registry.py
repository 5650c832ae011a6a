"""load_reward: registered names, aliases, option errors and 'package.module:attr' plug-ins."""

from __future__ import annotations

import sys
import textwrap

import pytest

from align.rewards import (
    FunctionJudge,
    FunctionReward,
    FunctionVerifier,
    GSM8KVerifier,
    PairwiseJudge,
    RewardModel,
    Verifier,
    available_rewards,
    check_reward_spec,
    load_reward,
    register_reward,
    registry,
    reward_kind,
    score_groups,
)

USER_MODULE = '''
class LengthReward:
    """A reward model class without a name attribute (load_reward gives it one)."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def score(self, prompts, completions):
        return [self.scale * len(c) for c in completions]


class NamedJudge:
    name = "named_judge"

    def judge_pairs(self, prompts, a, b):
        return [1.0 if len(x) < len(y) else 0.0 for x, y in zip(a, b)]


class Nothing:
    pass


def length(prompt, completion):
    return float(len(completion))


def prefers_shorter(prompt, a, b):
    return 1.0 if len(a) < len(b) else 0.0


def exact(prompt, completion, reference):
    return completion.strip() == reference.strip()


INSTANCE = LengthReward(scale=2.0)
NOT_A_PLUGIN = 42
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module written to tmp_path and importable as ``user_rewards_mod``."""
    name = "user_rewards_mod"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_builtins_are_registered():
    assert {"gsm8k", "gsm8k_verifier", "hf_reward_model", "openai_judge"} <= set(available_rewards())
    assert isinstance(load_reward(" gsm8k_verifier "), GSM8KVerifier)


def test_protocols_are_runtime_checkable():
    assert isinstance(GSM8KVerifier(), Verifier)
    assert not isinstance(GSM8KVerifier(), RewardModel)
    assert isinstance(FunctionJudge(lambda p, a, b: 0.5, "f"), PairwiseJudge)


def test_unknown_name_lists_known_ones():
    with pytest.raises(
        KeyError, match=r"unknown reward 'pairrm'; known rewards: .*gsm8k_verifier.*hf_reward_model:<path>"
    ):
        load_reward("pairrm")


def test_argument_rules():
    with pytest.raises(ValueError, match=r"'gsm8k_verifier' takes no argument after ':'"):
        load_reward("gsm8k_verifier:strict")
    with pytest.raises(ValueError, match=r"needs an argument: 'hf_reward_model:<path>'"):
        load_reward("hf_reward_model")
    with pytest.raises(ValueError, match=r"needs an argument"):
        load_reward("hf_reward_model:")


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(TypeError, match=r"reward 'gsm8k_verifier'.*it takes options \[\]"):
        load_reward("gsm8k_verifier", tolerance=0.1)
    with pytest.raises(TypeError, match=r"reward 'openai_judge'.*it takes options \[.*'both_orders'"):
        load_reward("openai_judge", model="m", both_order=False)


def test_register_custom_reward_and_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_reward("constant", aliases=("const",))
    class Constant:
        def __init__(self, value: float = 1.0):
            self.value = value

        def score(self, prompts, completions):
            return [self.value] * len(completions)

    plugin = load_reward("const", value=3.0)
    assert plugin.name == "constant" and plugin.score(["p"], ["c"]) == [3.0]
    assert "constant" in available_rewards() and "const" in available_rewards()
    with pytest.raises(ValueError, match="'constant' is already registered"):
        register_reward("constant")(type("Other", (), {}))
    with pytest.raises(ValueError, match="must not contain ':'"):
        register_reward("a:b")


# -- package.module:attr ----------------------------------------------------------------------------


def test_class_is_instantiated_with_options(user_module):
    plugin = load_reward(f"{user_module}:LengthReward", scale=0.5)
    assert reward_kind(plugin) == "reward"
    assert plugin.name == f"{user_module}:LengthReward"
    out = score_groups(plugin, ["p"], [["ab", "abcd"]])[0]
    assert out.scores.tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match=r"it takes options \['scale'\]"):
        load_reward(f"{user_module}:LengthReward", sclae=0.5)


def test_instance_is_used_as_is(user_module):
    plugin = load_reward(f"{user_module}:INSTANCE")
    assert plugin is sys.modules[user_module].INSTANCE
    assert plugin.score(["p"], ["abc"]) == [6.0]
    with pytest.raises(TypeError, match="is an instance, used as is; it takes no options"):
        load_reward(f"{user_module}:INSTANCE", scale=1.0)


def test_class_keeps_its_own_name(user_module):
    assert load_reward(f"{user_module}:NamedJudge").name == "named_judge"


def test_functions_need_a_kind(user_module):
    with pytest.raises(ValueError, match=r"plain function: pass kind= one of \['pairwise', 'reward', 'verifier'\]"):
        load_reward(f"{user_module}:length")
    with pytest.raises(TypeError, match="takes only the option 'kind'"):
        load_reward(f"{user_module}:length", kind="reward", scale=2)


def test_function_kinds_are_wrapped(user_module):
    reward = load_reward(f"{user_module}:length", kind="reward")
    judge = load_reward(f"{user_module}:prefers_shorter", kind="pairwise")
    verifier = load_reward(f"{user_module}:exact", kind="verifier")
    assert isinstance(reward, FunctionReward) and isinstance(judge, FunctionJudge)
    assert isinstance(verifier, FunctionVerifier)
    assert reward.name == f"{user_module}:length"
    assert reward.score(["p", "q"], ["a", "abc"]) == [1.0, 3.0]
    out = score_groups(judge, ["p"], [["long answer", "short"]])[0]
    assert out.preference.tolist() == [[0.5, 0.0], [1.0, 0.5]]
    assert out.best_worst() == (1, 0)
    checked = score_groups(verifier, ["p"], [["42", "41"]], references=["42"])[0]
    assert checked.correct.tolist() == [True, False]


@pytest.mark.parametrize(
    ("attr", "error", "match"),
    [
        ("Nothing", TypeError, "implements none of judge_pairs"),
        ("NOT_A_PLUGIN", TypeError, "is a int, not a plug-in"),
        ("missing", AttributeError, "has no attribute 'missing'"),
    ],
)
def test_bad_import_targets(user_module, attr, error, match):
    with pytest.raises(error, match=match):
        load_reward(f"{user_module}:{attr}")


def test_unknown_module():
    with pytest.raises(ImportError, match=r"cannot import module 'no_such_pkg_xyz.judges'.*known rewards"):
        load_reward("no_such_pkg_xyz.judges:Judge")


def test_check_reward_spec_fails_like_load_reward_without_building(user_module):
    """What a recipe checks before it writes anything: the same errors as load_reward, but a
    reward model or judge is never constructed (hf_reward_model on a missing path is not opened)."""
    check_reward_spec("gsm8k_verifier")
    check_reward_spec("hf_reward_model:/no/such/folder", batch_size=4)  # the folder is read only by load_reward
    check_reward_spec("lm_judge", model="builtin:smollm2-135m-instruct")  # no model is loaded
    check_reward_spec(f"{user_module}:LengthReward", scale=2.0)
    for spec, options, error, match in (
        ("pairrm", {}, KeyError, "unknown reward 'pairrm'; known rewards"),
        ("gsm8k_verifier:strict", {}, ValueError, "takes no argument after ':'"),
        ("hf_reward_model", {}, ValueError, "needs an argument"),
        ("gsm8k_verifier", {"tolerance": 0.1}, TypeError, r"it takes options \[\]"),
        (f"{user_module}:LengthReward", {"nope": 1}, TypeError, "it takes options"),
        (f"{user_module}:missing", {}, AttributeError, "has no attribute 'missing'"),
        ("no_such_pkg_xyz.judges:Judge", {}, ImportError, "cannot import module"),
    ):
        with pytest.raises(error, match=match):
            check_reward_spec(spec, **options)
