"""Command-line plumbing shared by the recipes: YAML config + command-line overrides."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import ModelConfig, TrlParser

from align.checkpoints import last_complete_checkpoint

__all__ = [
    "ConfigError", "DataArguments", "DriftArguments", "RecipeParser", "last_checkpoint", "parse_recipe_args", "run_recipe",
]  # fmt: skip


@dataclass
class DataArguments:
    """Where a recipe's data comes from."""

    dataset: str = field(
        default="builtin:gsm8k_pairs",
        metadata={"help": "Hub id, local JSONL/JSON/Parquet file or folder, or a builtin:<name> dataset."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a hub dataset."})
    eval_dataset: str | None = field(default=None, metadata={"help": "Evaluation data (same forms as dataset)."})
    eval_split: str = field(default="test", metadata={"help": "Split of a hub evaluation dataset."})
    num_eval: int = field(
        default=0, metadata={"help": "Without eval_dataset: hold back this many training rows for evaluation."}
    )
    max_train_examples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})


@dataclass
class DriftArguments:
    """The likelihood-drift probes every recipe runs by default (align.callbacks.LikelihoodDriftCallback)."""

    drift: bool = field(default=True, metadata={"help": "Track chosen/rejected log-likelihood drift on probe pairs."})
    drift_num_probes: int = field(
        default=16, metadata={"help": "Probe pairs: from the eval set, else held back from training."}
    )
    drift_eval_steps: float | None = field(
        default=None, metadata={"help": "Measure every N steps (default: eval_steps, else logging_steps)."}
    )
    drift_top_k: int = field(default=20, metadata={"help": "k of the top-k entropy and mass."})
    drift_entanglement_every: int = field(
        default=4, metadata={"help": "Gradient cosine every N measurements (0: never)."}
    )
    drift_entanglement_pairs: int = field(default=2, metadata={"help": "Probe pairs in the gradient cosine."})
    drift_warn_threshold: float = field(
        default=0.1,
        metadata={"help": "Warn when the chosen log-prob per token fell by more (nats) while the margin grew."},
    )

    def callbacks(self) -> list:
        if not self.drift:
            return []
        from align.callbacks import LikelihoodDriftCallback

        return [
            LikelihoodDriftCallback(
                num_probes=self.drift_num_probes, eval_steps=self.drift_eval_steps, top_k=self.drift_top_k,
                entanglement_every=self.drift_entanglement_every, entanglement_pairs=self.drift_entanglement_pairs,
                warn_threshold=self.drift_warn_threshold,
            )
        ]  # fmt: skip


class ConfigError(ValueError):
    """A recipe's YAML or command line is wrong: the message names the file or flag, the key, the
    value and what was expected, in a few lines (no usage dump, no traceback through argparse)."""


class RecipeParser(TrlParser):
    """``TrlParser`` that refuses abbreviated flags (``--max_step`` is not ``--max_steps``), takes
    negative numbers as values (``--learning_rate -1e-4`` reaches the range check instead of
    "expected one argument") and checks every YAML value against its field before parsing."""

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        # argparse prints the whole usage (170 lines for a recipe) before the one line that matters
        raise ConfigError(f"command line: {message} (--help lists every option)")

    def parse_recipe(self, argv: list[str], config_path: Path) -> tuple:
        config = _read_yaml(config_path)
        env = config.pop("env", {})
        if not isinstance(env, dict):
            raise ConfigError(f"{config_path}: key 'env': expected a mapping of environment variables, got {env!r}")
        actions = {action.dest: action for action in self._actions}
        for key, value in config.items():
            if key not in actions:
                close = difflib.get_close_matches(str(key), list(actions), n=3)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise ConfigError(f"{config_path}: unknown key {key!r}{hint}")
            config[key] = _yaml_value(actions[key], value, f"{config_path}: key {key!r}")
        for name, value in env.items():
            os.environ[name] = str(value)
        self.set_defaults_with_config(**config)
        argv = _join_negative_values(argv)
        _, unknown = self.parse_known_args(argv)
        if unknown:
            first = next((token for token in unknown if token.startswith("-")), unknown[0])
            if not first.startswith("-"):
                raise ConfigError(f"command line: unexpected value {first!r} (every value follows its --flag)")
            flag = first.partition("=")[0]
            close = difflib.get_close_matches(flag.lstrip("-"), list(actions), n=3)
            hint = f"; did you mean {' or '.join('--' + c for c in close)}?" if close else ""
            raise ConfigError(f"command line: unknown option {flag}{hint}")
        try:
            return self.parse_args_into_dataclasses(args=argv)
        except (ValueError, TypeError, KeyError, ImportError, AttributeError) as err:  # a __post_init__ refused it
            if isinstance(err, ConfigError):
                raise
            message = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise ConfigError(f"{config_path} + command line: {message}") from None


_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--flag -1e-4`` → ``--flag=-1e-4``: Python 3.11's argparse takes ``-1e-4`` for an option
    (its negative-number pattern has no exponent) and reports "expected one argument"."""
    out = []
    for token in argv:
        if out and _NEGATIVE_NUMBER.match(token) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: {where}invalid YAML: {getattr(err, 'problem', None) or err}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got a {type(config).__name__}")
    return config


def _type_name(action) -> str:
    if action.choices:
        return "one of " + ", ".join(map(str, action.choices))
    kind = getattr(action.type, "__name__", "")
    return {"string_to_bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}.get(
        kind, "a value of the field's type"
    )


def _yaml_value(action, value, where: str):
    """``value`` converted the way argparse converts the same text on the command line; refuse what
    argparse would refuse there, and what it would silently coerce (a fractional int, a list for a
    scalar), naming the file, the key, the value and the expected type."""
    if value is None:
        return None  # optional fields take null; required ones are refused by their dataclass
    if isinstance(value, dict):
        if action.type in (str, dict):
            return value  # JSON-like fields such as accelerator_config or lr_scheduler_kwargs
        raise ConfigError(f"{where}: got a mapping {value!r}; expected {_type_name(action)}")
    if isinstance(value, list):
        if action.nargs not in ("+", "*"):
            raise ConfigError(f"{where}: got a list {value!r}; expected {_type_name(action)}")
        return [_scalar(action, item, where) for item in value]
    return _scalar(action, value, where)


def _scalar(action, value, where: str):
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{where}: got {value!r}; expected {_type_name(action)}")
    if action.type is int and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{where}: value {value!r} is not {_type_name(action)}")
        value = int(value)
    if getattr(action.type, "__name__", "") == "string_to_bool" and not isinstance(value, (bool, str)):
        raise ConfigError(f"{where}: value {value!r} is not true or false")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    try:
        converted = action.type(text) if action.type is not None else text
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise ConfigError(f"{where}: value {value!r} is not {_type_name(action)}") from None
    if action.choices and converted not in action.choices:
        raise ConfigError(f"{where}: value {value!r} is not {_type_name(action)}")
    return converted


def parse_recipe_args(
    config_cls, default_config: str | Path, argv: list[str] | None = None, *, data_classes: tuple = (DataArguments,)
):
    """Parse ``(data, config_cls, ModelConfig, DriftArguments, BenchmarkArguments, *more)`` from a
    YAML file and the command line, where ``data_classes = (data class, *more classes)`` (default:
    DataArguments).

    Without ``--config`` the recipe's own YAML is used, so ``accelerate launch recipes/rpo.py`` runs
    the documented default; every field can still be overridden (``--max_steps 5``). ``--config``
    with another file replaces the default file. A bad value fails with :class:`ConfigError`
    naming the file or flag, the key and the expected type.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = Path(default_config)
    for i, token in enumerate(argv):
        if token == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("command line: --config needs a YAML file")
            config_path = Path(argv[i + 1])
            argv = argv[:i] + argv[i + 2 :]
            break
        if token.startswith("--config="):
            config_path = Path(token.partition("=")[2])
            argv = argv[:i] + argv[i + 1 :]
            break
    first, *more = data_classes
    from align.evaluation.hook import BenchmarkArguments

    parser = RecipeParser((first, config_cls, ModelConfig, DriftArguments, BenchmarkArguments, *more))
    return parser.parse_recipe(argv, config_path)


def run_recipe(main) -> None:
    """Run a recipe's ``main()`` as a command: a mistake the user can fix (a bad config, data file,
    model path, or a run folder made by another config) prints one message and exits with status
    2 instead of a traceback; anything else is a bug and keeps its traceback."""
    from align.data import DataValidationError
    from align.loops.run import ConfigChangedError
    from align.loops.stages import StageConfigError

    try:
        main()
    except (ConfigError, DataValidationError, ConfigChangedError, StageConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def last_checkpoint(output_dir: str, resume: str | bool | None) -> str | None:
    """The checkpoint to resume from: an explicit path, or the newest complete one in ``output_dir``
    (unless ``resume`` is False), so re-running a killed command continues where it stopped."""
    if isinstance(resume, str) and resume not in ("", "true", "True", "false", "False"):
        return resume
    if resume in (False, "false", "False") or not Path(output_dir).is_dir():
        return None
    return last_complete_checkpoint(output_dir)
