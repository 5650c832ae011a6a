"""Choosing a reward plug-in by a string: the registry and :func:`load_reward`.

Spec forms (``load_reward(spec, **options)``):

- ``name``: a registered plug-in, e.g. ``gsm8k_verifier``, ``openai_judge``;
- ``name:argument``: a registered plug-in that takes one argument, e.g.
  ``hf_reward_model:path/or/hub-id``;
- ``package.module:attr`` (anything with ``:`` whose prefix is not registered): the object is
  imported. A class is instantiated with ``**options``; an object already implementing a protocol
  is used as is; a plain function needs ``kind="reward"`` (``(prompt, completion) -> float``),
  ``kind="pairwise"`` (``(prompt, a, b) -> P(a ≻ b)``) or ``kind="verifier"``
  (``(prompt, completion, reference) -> bool``) and is wrapped to the batched protocol.
"""

from __future__ import annotations

import importlib
import json
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from align.rewards.adapters import FunctionJudge, FunctionReward, FunctionVerifier
from align.rewards.base import reward_kind

__all__ = ["available_rewards", "check_reward_spec", "load_reward", "register_reward", "reward_options"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Entry:
    name: str  # the canonical name
    factory: Callable[..., Any]
    argument: str | None  # the factory parameter that receives the text after ':', if any


_REGISTRY: dict[str, _Entry] = {}  # canonical names and aliases
_FUNCTION_KINDS = {"reward": FunctionReward, "pairwise": FunctionJudge, "verifier": FunctionVerifier}


def register_reward(name: str, *, aliases: tuple[str, ...] = (), argument: str | None = None) -> Callable[[F], F]:
    """Decorator: register a plug-in class (or factory function) under ``name`` and ``aliases``.

    ``argument`` names the parameter that receives the text after ``name:`` in a spec (e.g.
    ``argument="path"`` makes ``hf_reward_model:my/model`` call ``factory("my/model", **options)``);
    a plug-in registered without one refuses such a spec. A registered class gets ``name`` as its
    ``name`` attribute unless it defines one itself.
    """
    for key in (name, *aliases):
        if ":" in key:
            raise ValueError(f"reward name {key!r} must not contain ':'")

    def decorator(factory: F) -> F:
        for key in (name, *aliases):
            if key in _REGISTRY and _REGISTRY[key].factory is not factory:
                raise ValueError(f"reward {key!r} is already registered by {_REGISTRY[key].factory.__qualname__}")
        if inspect.isclass(factory) and "name" not in vars(factory):
            factory.name = name
        entry = _Entry(name, factory, argument)
        for key in (name, *aliases):
            _REGISTRY[key] = entry
        return factory

    return decorator


def available_rewards() -> list[str]:
    """Every registered name and alias (those taking an argument are used as ``name:argument``)."""
    return sorted(_REGISTRY)


def _known() -> str:
    names = [f"{key}:<{entry.argument}>" if entry.argument else key for key, entry in sorted(_REGISTRY.items())]
    return ", ".join(names) + ", or 'package.module:attr'"


def load_reward(spec: str, **options: Any) -> Any:
    """Build the reward plug-in that ``spec`` names (see the module docstring), with ``options``.

    Unknown names fail listing the known ones; unknown options fail listing the accepted ones.
    The result implements :class:`PairwiseJudge`, :class:`RewardModel` or :class:`Verifier` and
    has a ``name``.
    """
    spec = spec.strip()
    head, colon, argument = spec.partition(":")
    if head in _REGISTRY:
        entry = _REGISTRY[head]
        args = _registered_args(entry, spec, argument if colon else None, options)
        return entry.factory(*args, **options)
    if colon:
        return _import_plugin(spec, options)
    raise KeyError(f"unknown reward {spec!r}; known rewards: {_known()}")


def check_reward_spec(spec: str, **options: Any) -> None:
    """Fail as :func:`load_reward` would on a wrong name, argument, import path or option, without
    building the plug-in (no reward model or judge is loaded): what a recipe checks before it
    writes anything or loads a model."""
    spec = spec.strip()
    head, colon, argument = spec.partition(":")
    if head in _REGISTRY:
        _registered_args(_REGISTRY[head], spec, argument if colon else None, options)
    elif colon:
        obj = _import_attr(spec)
        if inspect.isclass(obj):
            _check_options(spec, obj, (), options)
    else:
        raise KeyError(f"unknown reward {spec!r}; known rewards: {_known()}")


def reward_options(text: str | None, flag: str = "judge_options") -> dict[str, Any]:
    """The JSON object of a ``--judge_options``-style flag (``""``/None: no options), or an error
    naming ``flag``."""
    try:
        options = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"--{flag} is not valid JSON ({err.msg}): {text!r}") from None
    if not isinstance(options, dict):
        raise ValueError(f"--{flag} must be a JSON object, got {text!r}")
    return options


def _registered_args(entry: _Entry, spec: str, argument: str | None, options: dict[str, Any]) -> tuple:
    if entry.argument is None and argument is not None:
        raise ValueError(f"reward {entry.name!r} takes no argument after ':', got {spec!r}")
    if entry.argument is not None and not argument:
        raise ValueError(f"reward {entry.name!r} needs an argument: '{entry.name}:<{entry.argument}>', got {spec!r}")
    args = () if argument is None else (argument,)
    _check_options(entry.name, entry.factory, args, options)
    return args


def _check_options(name: str, factory: Callable[..., Any], args: tuple[Any, ...], options: dict[str, Any]) -> None:
    """Fail before construction, listing what the plug-in accepts, if ``options`` do not fit."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have no signature: let the call itself fail
        return
    try:
        signature.bind(*args, **options)
    except TypeError as err:
        accepted = [p for p in signature.parameters if p != "self"]
        raise TypeError(f"reward {name!r}: {err}; it takes options {accepted}") from None


def _import_attr(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"reward spec {spec!r} must be 'package.module:attr'; known rewards: {_known()}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"reward {spec!r}: cannot import module {module_name!r} ({err}); known rewards: {_known()}"
        ) from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"reward {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    return obj


def _import_plugin(spec: str, options: dict[str, Any]) -> Any:
    obj = _import_attr(spec)
    if inspect.isclass(obj):
        _check_options(spec, obj, (), options)
        plugin = obj(**options)
    elif reward_kind(obj) is not None:
        if options:
            raise TypeError(f"reward {spec!r} is an instance, used as is; it takes no options, got {sorted(options)}")
        plugin = obj
    elif callable(obj):
        plugin = _wrap_function(spec, obj, options)
    else:
        raise TypeError(f"reward {spec!r} is a {type(obj).__name__}, not a plug-in class, instance or function")

    if reward_kind(plugin) is None:
        raise TypeError(f"reward {spec!r}: {type(plugin).__name__} implements none of judge_pairs(), score(), verify()")
    if not hasattr(plugin, "name"):
        try:
            plugin.name = spec
        except AttributeError:
            raise TypeError(
                f"reward {spec!r}: {type(plugin).__name__} has no 'name' attribute and cannot take one"
            ) from None
    return plugin


def _wrap_function(spec: str, fn: Callable[..., Any], options: dict[str, Any]) -> Any:
    options = dict(options)
    kind = options.pop("kind", None)
    if kind not in _FUNCTION_KINDS:
        raise ValueError(
            f"reward {spec!r} is a plain function: pass kind= one of {sorted(_FUNCTION_KINDS)} "
            f"(reward: (prompt, completion) -> float; pairwise: (prompt, a, b) -> P(a ≻ b); "
            f"verifier: (prompt, completion, reference) -> bool), got kind={kind!r}"
        )
    if options:
        raise TypeError(f"reward {spec!r} is a plain function; it takes only the option 'kind', got {sorted(options)}")
    return _FUNCTION_KINDS[kind](fn, spec)
