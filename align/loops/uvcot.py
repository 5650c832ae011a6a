"""UV-CoT's on-policy pipeline (Zhao et al. 2025): propose regions, answer from their crops, judge,
pair, train, as resumable loop stages on any Hugging Face vision-language model.

A prompt row holds an image (``images``: one path), a question whose user turn ends with
:data:`align.data.boxes.BOX_PROMPT`, and, for evaluation and the warm-up, the ``answer`` and the
true region ``box``. Iteration t (π_t samples, π_{t+1} is trained):

========================  ==========================================================================
``warmup``                iteration 0 only, ``--warmup_fraction`` > 0: SFT of the base model on the
                          first fraction of the prompts with their true box, true crop and answer
                          (the paper's 10%-labelled variant; ``warmup/model``), which becomes π_0
``evaluate_start``        π_0 on the held-out prompts: greedy box, crop, greedy answer (``eval_start.json``)
``baselines``             iteration 0 only: the same with the centre box and with the true box
``generate``              K regions per prompt, sampled (turn 1; ``samples.jsonl``)
``crop_answer``           each region parsed (an unparseable one falls back to the centre box and is
                          counted), cropped by the official rule, one answer sampled after
                          [prompt, region, user: crop + question] (turn 2; ``answers.jsonl``, ``crops/``)
``judge``                 the judge scores each answer (``judged.jsonl``)
``dataset``               pairs of (region, answer) samples by score (builder ``uvcot_pairs``)
``train``                 :class:`align.trainers.UVCoTTrainer` (sDPO + SFT on the winner) against π_t
``evaluate``              π_{t+1} as ``evaluate_start`` (``eval.json``)
========================  ==========================================================================

Crops are files named by a hash of (image, region) in ``<output_dir>/crops/``: a pure function of
their inputs, so a resumed stage or another process writes the same file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.data.boxes import (
    box_question,
    FALLBACK_BOX,
    box_to_pixels,
    crop_image,
    format_box,
    iou,
    parse_box,
    uvcot_completion,
)
from align.io import atomic_write_json, read_json, read_jsonl, write_jsonl
from align.loops.onpolicy import PROMPT_FIELDS, OnPolicyLoop, _fmt
from align.loops.run import IterationFolder, RunFolder
from align.loops.stages import (
    BuildDataset,
    Evaluate,
    EvaluateStart,
    Generate,
    IterationState,
    Judge,
    Stage,
    StageConfigError,
    Train,
)

__all__ = ["UVCOT_STAGES", "UVCoTArguments", "UVCoTLoop", "question_of"]

logger = logging.getLogger(__name__)


@dataclass
class UVCoTArguments:
    """How regions become crops, and the optional supervised warm-up."""

    min_half: int = field(
        default=168,
        metadata={"help": "Smallest half-side of a crop in pixels (official: 168 for a 336 px CLIP; the tiny "
                  "default model's 32 px input: 16)."},
    )  # fmt: skip
    padded_square: bool = field(
        default=True,
        metadata={"help": "Boxes are in the frame of the image padded to a square (LLaVA's 'pad'; official)."},
    )
    box_integers: bool = field(
        default=False, metadata={"help": "Also read whole numbers as box coordinates (official: decimals only)."}
    )
    answer_temperature: float | None = field(
        default=None, metadata={"help": "Temperature of the turn-2 answers (default: --temperature)."}
    )
    warmup_fraction: float = field(
        default=0.0,
        metadata={"help": "SFT on this first fraction of the prompts with their true boxes before iteration 0 "
                  "(the paper's 10%-labelled variant: 0.1; 0: none)."},
    )  # fmt: skip
    warmup_prompts: str | None = field(
        default=None,
        metadata={"help": "Labelled rows (with 'box' and 'answer') for the warm-up, of which the first "
                  "--warmup_fraction is used (default: --prompts)."},
    )  # fmt: skip
    warmup_prompts_split: str = field(default="train", metadata={"help": "Their split."})
    warmup_epochs: float = field(default=1.0, metadata={"help": "Epochs of the warm-up SFT."})
    warmup_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the warm-up SFT (default: --learning_rate)."}
    )

    def __post_init__(self) -> None:
        if self.min_half < 1:
            raise ValueError(f"min_half must be >= 1 pixel, got {self.min_half}")
        if not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"warmup_fraction must be in [0, 1], got {self.warmup_fraction}")
        if self.warmup_epochs <= 0:
            raise ValueError(f"warmup_epochs must be > 0, got {self.warmup_epochs}")
        if self.answer_temperature is not None and self.answer_temperature < 0:
            raise ValueError(f"answer_temperature must be >= 0, got {self.answer_temperature}")


# -- the two turns ---------------------------------------------------------------------------------


def question_of(row: dict) -> str:
    """The question of a prompt row: its ``question`` field, else its turn-1 prompt's (:func:`box_question`)."""
    return row.get("question") or box_question(row["prompt"])


def image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:  # reads the header only
        return image.size


@dataclass
class Region:
    """A proposed region: the text the model wrote, whether it parsed, the box used and its crop."""

    text: str
    parsed: bool
    box: tuple[float, ...]  # pixels of the original image
    crop: str


# -- the loop ----------------------------------------------------------------------------------------


class UVCoTLoop(OnPolicyLoop):
    """The on-policy loop with UV-CoT's stages (module docstring); ``loop_args.num_samples`` = K regions
    per question, each answered once."""

    prompt_fields = (*PROMPT_FIELDS, "question", "box")

    def __init__(self, *, uvcot_args: UVCoTArguments, stages=None, **kwargs):
        self.uvcot_args = uvcot_args
        super().__init__(stages=UVCOT_STAGES if stages is None else stages, **kwargs)

    def config(self) -> dict:
        config = super().config()
        config["uvcot"] = dataclasses.asdict(self.uvcot_args)
        return config

    @property
    def crop_dir(self) -> Path:
        return Path(self.training_args.output_dir) / "crops"

    # -- regions and crops ---------------------------------------------------------------------------

    def region(self, row: dict, text: str | None) -> Region:
        """Parse ``text`` (None: the centre box, for the baseline), fall back to the centre box, crop."""
        ua = self.uvcot_args
        image = row["images"][0]
        box = None if text is None else parse_box(text, integers=ua.box_integers)
        pixels = box_to_pixels(FALLBACK_BOX if box is None else box, image_size(image), padded_square=ua.padded_square)
        crop, _ = crop_image(image, pixels, self.crop_dir, min_half=ua.min_half)
        return Region(text if text is not None else format_box(FALLBACK_BOX), box is not None, tuple(pixels), crop)

    def true_region(self, row: dict) -> Region:
        if row.get("box") is None:
            raise ValueError(f"prompt {row.get('index', '')}: no 'box' field (the true region)")
        return self.region(row, format_box(row["box"]))

    def answer_prompt(self, row: dict, region: Region) -> list[dict]:
        """Turn 2 as sampled: [prompt (image filled), assistant region, user (crop filled) + question]."""
        from align.data.images import fill_images

        box_turn, user_turn, _ = uvcot_completion(region.text, question_of(row), "")
        return [*self.generation_prompt(row), box_turn, *fill_images([user_turn], [region.crop], name="answer turn")]

    # -- evaluation ------------------------------------------------------------------------------------

    def evaluate(self, model, tokenizer, judge, eval_rows, *, accelerator=None, baseline=None, boxes: str = "model"):
        """Greedy two-turn answers to the held-out prompts: ``accuracy`` (the judge, a verifier),
        or ``mean_score`` (a reward model), ``iou`` (mean IoU of the region used with the true ``box``, in pixels of the image),
        ``parse_rate`` (regions that parsed). ``boxes``: ``model`` (the model proposes), ``centre``
        (the fallback box: the no-region baseline) or ``oracle`` (the true box)."""
        from align.generation import HFGenerator
        from align.rewards import checked_verdicts, reward_kind, score_groups

        generator = HFGenerator(model, tokenizer, accelerator, show_progress=self.main)
        greedy = self.sampling(greedy=True, prompts=len(eval_rows))
        if boxes == "model":
            texts = [c[0] for c in generator.generate([self.generation_prompt(r) for r in eval_rows], greedy)]
            regions = [self.region(r, text) for r, text in zip(eval_rows, texts)]
        elif boxes == "centre":
            regions = [self.region(r, None) for r in eval_rows]
        else:
            regions = [self.true_region(r) for r in eval_rows]
        answers = [c[0] for c in generator.generate([self.answer_prompt(r, g) for r, g in zip(eval_rows, regions)],
                                                    greedy)]  # fmt: skip
        result: dict[str, Any] = {"answers": answers, "regions": [g.text for g in regions]}
        if judge is None:
            return result
        prompts = [self.generation_prompt(r) for r in eval_rows]
        kind = reward_kind(judge)
        if kind == "verifier":
            correct = checked_verdicts(judge, prompts, answers, [r.get("answer") for r in eval_rows])
            result["accuracy"] = float(correct.mean())
        elif kind != "pairwise":  # a reward model's (or PRM's) mean score of the answers
            scores = [j.scores[0] for j in score_groups(judge, prompts, [[a] for a in answers])]
            result["mean_score"] = float(sum(scores) / len(scores))
        result["parse_rate"] = sum(g.parsed for g in regions) / len(regions)
        if all(r.get("box") is not None for r in eval_rows):
            ious = []
            for r, g in zip(eval_rows, regions):
                size = image_size(r["images"][0])
                ious.append(iou(g.box, box_to_pixels(r["box"], size, padded_square=self.uvcot_args.padded_square)))
            result["iou"] = sum(ious) / len(ious)
        return result

    # -- models ----------------------------------------------------------------------------------------

    @staticmethod
    def warmup_dir(run: RunFolder) -> Path:
        return run.iteration(0).path / "warmup"

    def load_policy(self, run: RunFolder, t: int):
        """π_t as :meth:`OnPolicyLoop.load_policy`, starting from the warm-up model when one was trained."""
        from align.models import load_model

        warm = self.warmup_dir(run) / "model"
        if not run.iteration(0).done(WarmUp.name) or (t > 0 and not self.model_args.use_peft):
            return super().load_policy(run, t)
        if not self.model_args.use_peft:
            return load_model(dataclasses.replace(self.model_args, model_name_or_path=str(warm)), for_training=True)
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(self.model_args, for_training=True), str(warm)).merge_and_unload()
        for i in range(t):
            model = PeftModel.from_pretrained(model, str(run.iteration(i).model_dir)).merge_and_unload()
        return model

    # -- reporting -------------------------------------------------------------------------------------

    def summary(self, run: RunFolder, t: int) -> dict:
        out = super().summary(run, t)
        stages = run.iteration(t).manifest()["stages"]
        out["fallback_rate"] = stages.get(CropAnswer.name, {}).get("fallback_rate")
        for key in ("iou", "parse_rate"):
            out[key] = stages.get("evaluate", {}).get(key)
        return out

    def table(self, run: RunFolder, iterations: int) -> str:
        """Markdown: per iteration, the pairs trained on, the sampled regions' fallback rate and answer
        accuracy, and the held-out accuracy, IoU with the true region and parse rate; the start row is
        π_0 (after the warm-up), with the centre-box and true-box accuracies of π_0 below."""
        stages = run.iteration(0).manifest()["stages"]
        lines = [
            "| iteration | pairs | sampled fallback rate | sample accuracy | held-out accuracy | IoU | parse rate "
            "| Δ chosen logp/tok | Δ rejected logp/tok |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        first = stages.get("evaluate_start", {})
        if first:
            lines.append(f"| 0 (start) | | | | {_fmt(first.get('accuracy'))} | {_fmt(first.get('iou'))} | "
                         f"{_fmt(first.get('parse_rate'))} | | |")  # fmt: skip
        for t in range(iterations):
            s = self.summary(run, t)
            lines.append(
                f"| {t + 1} | {s.get('pairs') or ''} | {_fmt(s.get('fallback_rate'))} | {_fmt(s.get('sample_accuracy'))} "
                f"| {_fmt(s.get('accuracy'))} | {_fmt(s.get('iou'))} | {_fmt(s.get('parse_rate'))} "
                f"| {_fmt(s.get('chosen_drift'), '+.3f')} | {_fmt(s.get('rejected_drift'), '+.3f')} |"
            )
        base = stages.get(Baselines.name)
        if base:
            lines.append("")
            lines.append(f"π_0 with the centre box: {_fmt(base.get('centre_accuracy'))} accuracy; with the true box: "
                         f"{_fmt(base.get('oracle_accuracy'))} (IoU 1).")  # fmt: skip
        return "\n".join(lines)


# -- stages ------------------------------------------------------------------------------------------


class WarmUp(Stage):
    """SFT of the base model on the labelled first fraction of the prompts: [true box, user: true crop +
    question, answer], both assistant turns trained (:class:`align.trainers.sft.SFTTrainer`)."""

    name = "warmup"
    first_iteration_only = True

    def applies(self, state: IterationState) -> bool:
        return super().applies(state) and state.loop.uvcot_args.warmup_fraction > 0

    def rows(self, state: IterationState) -> list[dict]:
        loop = state.loop
        from align.loops.onpolicy import load_prompt_rows

        la, ua = loop.loop_args, loop.uvcot_args
        source, split = (ua.warmup_prompts, ua.warmup_prompts_split) if ua.warmup_prompts else (la.prompts, la.prompts_split)
        prompts = load_prompt_rows(source, split, la.prompt_field, loop.prompt_fields)
        labelled = prompts[: max(1, math.ceil(ua.warmup_fraction * len(prompts)))]
        rows = []
        for i, row in enumerate(labelled):
            if row.get("answer") is None:
                raise StageConfigError(f"{source}: row {i}: the warm-up needs an 'answer' (and a 'box')")
            region = loop.true_region(dict(row, index=i))
            completion = uvcot_completion(region.text, question_of(row), str(row["answer"]))
            rows.append({"prompt": row["prompt"], "images": row["images"], "completion": completion,
                         "completion_images": [region.crop]})  # fmt: skip
        return rows

    def run(self, state: IterationState) -> None:
        from align.trainers.base import PreferenceConfig
        from align.trainers.sft import SFTConfig, SFTTrainer

        loop, ua = state.loop, state.loop.uvcot_args
        folder = loop.warmup_dir(state.run)
        rows = self.rows(state)
        ta = loop.training_args
        # the run's training settings (precision, batch size, distribution, ...) with SFT as the objective
        common = {f.name: getattr(ta, f.name) for f in dataclasses.fields(PreferenceConfig)
                  if f.init and f.name != "objective"}  # fmt: skip
        args = SFTConfig(**{**common, "output_dir": str(folder / "train"), "num_train_epochs": ua.warmup_epochs,
                            "max_steps": -1, "learning_rate": ua.warmup_learning_rate or ta.learning_rate})  # fmt: skip
        model = super(UVCoTLoop, loop).load_policy(state.run, 0)  # the base model
        trainer, metrics = loop.train(state.it, model, state.tokenizer, rows, trainer_cls=SFTTrainer, args=args,
                                      model_dir=folder / "model", drift=False)  # fmt: skip
        del trainer
        if state.main:
            state.it.finish(self.name, {"rows": len(rows), **{k: v for k, v in metrics.items()
                                                              if isinstance(v, (int, float))}})  # fmt: skip
        state.barrier()


class Baselines(Stage):
    """π_0's held-out accuracy with the centre box (what a model that cannot localise gets) and with
    the true box (what perfect regions would give): the room UV-CoT has."""

    name = "baselines"
    first_iteration_only = True

    def applies(self, state: IterationState) -> bool:
        return super().applies(state) and bool(state.eval_rows) and all("box" in r for r in state.eval_rows)

    def run(self, state: IterationState) -> None:
        out = {}
        for boxes in ("centre", "oracle"):
            result = state.loop.evaluate(state.policy(), state.tokenizer, state.judge, state.eval_rows, boxes=boxes)
            out[f"{boxes}_accuracy"] = result.get("accuracy")
        if state.main:
            atomic_write_json(state.it.path / "baselines.json", out)
            state.it.finish(self.name, out)
        state.barrier()


def answers_file(it: IterationFolder) -> Path:
    return it.path / "answers.jsonl"


class CropAnswer(Stage):
    """Turn 2 for every sampled region: parse (fallback counted), crop, one sampled answer each."""

    name = "crop_answer"

    def run(self, state: IterationState) -> None:
        loop, it = state.loop, state.it
        rows = read_jsonl(it.samples)
        regions = [[loop.region(row, text) for text in row["completions"]] for row in rows]
        flat = [dict(row, prompt=loop.answer_prompt(row, g)) for row, group in zip(rows, regions) for g in group]
        base = loop.sampling(t=it.index)
        temperature = loop.uvcot_args.answer_temperature
        sampling = dataclasses.replace(base, num_samples=1, seed=base.seed + 500_000,
                                       temperature=base.temperature if temperature is None else temperature)  # fmt: skip
        chunks = it.path / "answers.chunks"
        # the turn-2 prompts are complete conversations already: sample them as they are
        answers = loop.generate(it, state.policy(), state.tokenizer, [{"prompt": f["prompt"]} for f in flat],
                                chunks=chunks, sampling=sampling)  # fmt: skip
        if state.main:
            out, i = [], 0
            for row, group in zip(rows, regions):
                k = len(group)
                out.append({**{key: v for key, v in row.items() if key != "completions"},
                            "regions": [g.text for g in group], "parsed": [g.parsed for g in group],
                            "crops": [g.crop for g in group], "completions": [a[0] for a in answers[i : i + k]]})  # fmt: skip
                i += k
            write_jsonl(out, answers_file(it))
            parsed = [p for r in out for p in r["parsed"]]
            it.finish(self.name, {"regions": len(parsed), "fallback_rate": 1 - sum(parsed) / max(1, len(parsed))})
            shutil.rmtree(chunks, ignore_errors=True)
        state.barrier()


class JudgeAnswers(Judge):
    """The judge on the turn-2 answers (``answers.jsonl``), given the original image and question."""

    def source(self, it: IterationFolder):
        return answers_file(it)


UVCOT_STAGES: tuple[Stage, ...] = (
    WarmUp(),
    EvaluateStart(),
    Baselines(),
    Generate(),
    CropAnswer(),
    JudgeAnswers(),
    BuildDataset(),
    Train(),
    Evaluate(),
)
