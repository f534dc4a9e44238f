"""LoRA supervised fine-tuning with PEFT and transformers' Trainer.

The Trainer supplies what a long CPU run needs and is easy to get wrong by hand:
checkpoints with optimizer, scheduler and RNG state (a killed run resumes where
it stopped), evaluation on the dev split, early stopping that keeps the best
checkpoint, seeding. genfoundry adds the parts that make it fast and right on
small models:

- prompt-loss masking and packing without cross-talk (:mod:`genfoundry.tune.records`);
- logits only where a label is: Gemma 3's 262k-token output layer costs more per
  token than the rest of the 270M model, and most tokens of a grounded prompt are
  context that is never predicted;
- a memory estimate before the first step, so a rank or length that will not fit
  is refused with the figure instead of swapping the machine to a halt.

Example::

    cfg = TrainConfig(epochs=2, lora_r=8)
    result = train(base, train_rows, dev_rows, cfg, run_dir, on_event=print)
"""

from __future__ import annotations

import math
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from genfoundry.core.errors import InvalidRequest
from genfoundry.models.prompting import template_for
from genfoundry.tune.base import BaseModel as TuneBase
from genfoundry.tune.records import IGNORE, detect_format, encode_rows, pack

__all__ = ["Cancelled", "TrainConfig", "estimate_memory", "hardware", "train"]

MIN_DEV_ROWS = 8
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainConfig(BaseModel):
    """Hyper-parameters of one run (the defaults suit a few hundred examples on a small model)."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field("auto", description="Record format: auto, chat (messages), completion (prompt+completion), text.")
    lora_r: int = Field(8, ge=1, le=256, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS),
                                      description="Projections to adapt (never embeddings or lm_head: llama.cpp's converter refuses them).")
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate (linear decay after warmup).")
    epochs: float = Field(3.0, gt=0, le=100, description="Passes over the training split.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(4, ge=1, le=256, description="Examples (or packed blocks) per step.")
    grad_accum: int = Field(1, ge=1, le=256, description="Steps of gradients summed per optimizer step.")
    max_length: int = Field(512, ge=16, le=32768, description="Tokens per packed block (and longest example).")
    packing: bool = Field(False, description="Pack several examples into each block of max_length tokens (fewer, longer steps; measured slower per token on CPU, see docs/benchmarks.md).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming the learning rate up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate on dev (and checkpoint) every N optimizer steps; default: about 4 times per epoch.")
    early_stopping_patience: int = Field(2, ge=0, description="Evaluations without a lower dev loss before stopping (0: never stop early).")
    seed: int = Field(42, description="Seed for initialisation, shuffling and dropout.")
    dev_fraction: float = Field(0.1, ge=0, lt=0.5, description="Share of train rows held out for dev when the dataset has no dev split.")
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores).")


class Cancelled(Exception):
    """The run was asked to stop; its last checkpoint is kept."""


def hardware() -> dict[str, Any]:
    import torch
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                            "torch": torch.__version__, "device": "cpu"}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["device"] = "cuda"
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import psutil
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def estimate_memory(model_config: dict, *, parameters: int, lora_parameters: int, block_tokens: int,
                    trained_tokens: int, longest: int | None = None) -> int:
    """Peak bytes a step needs, roughly: fp32 weights, LoRA weights with Adam state and gradients,
    activations kept for the backward pass, and logits (with their gradient) where labels are."""
    hidden = int(model_config.get("hidden_size", 1024))
    inter = int(model_config.get("intermediate_size", 4 * hidden))
    layers = int(model_config.get("num_hidden_layers", 24))
    vocab = int(model_config.get("vocab_size", 32000))
    heads = int(model_config.get("num_attention_heads", 8))
    weights = parameters * 4
    lora = lora_parameters * 4 * 4
    activations = 2 * block_tokens * layers * (12 * hidden + 4 * inter) * 4
    attention = 3 * block_tokens * min(block_tokens, longest or block_tokens) * heads * layers * 4
    logits = trained_tokens * vocab * 4 * 3
    # + about 1 GiB for torch and transformers themselves (measured: docs/benchmarks.md#fine-tuning)
    return int((weights + lora + activations + attention + logits) * 1.2) + 2**30


def _dev_rows(train_rows: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    """Hold out a deterministic share of train rows (by row id) when the dataset has no dev split."""
    import hashlib
    if fraction <= 0 or len(train_rows) < 20:
        return train_rows, []
    scored = sorted(train_rows, key=lambda r: hashlib.sha256(str(r.get("_id", r)).encode()).hexdigest())
    n_dev = max(2, int(len(train_rows) * fraction))
    dev_ids = {id(r) for r in scored[:n_dev]}
    return [r for r in train_rows if id(r) not in dev_ids], scored[:n_dev]


class _Collator:
    """Pads packed blocks to the longest in the batch. The padding is one more 'example' (its positions
    restart at 0, labels ignored), so no attention mask is needed and packed examples stay apart."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, blocks: list[dict]) -> dict:
        import torch
        width = max(len(b["input_ids"]) for b in blocks)
        ids, labels, positions = [], [], []
        for b in blocks:
            pad = width - len(b["input_ids"])
            ids.append(b["input_ids"] + [self.pad_id] * pad)
            labels.append(b["labels"] + [IGNORE] * pad)
            positions.append(b["position_ids"] + list(range(pad)))
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "position_ids": torch.tensor(positions),
                "n_tokens": torch.tensor([len(b["input_ids"]) for b in blocks])}


def selective_loss(model, inputs: dict):
    """Mean cross-entropy over labelled tokens. The output layer runs only on the hidden states that
    predict a labelled token (not on every position), which is most of the step's arithmetic and memory
    for a large vocabulary."""
    import torch
    import torch.nn.functional as F
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(causal, causal.base_model_prefix)
    hidden = body(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"], use_cache=False).last_hidden_state
    targets = inputs["labels"][:, 1:]
    where = targets != IGNORE
    if not where.any():
        return hidden.sum() * 0.0
    logits = causal.get_output_embeddings()(hidden[:, :-1][where]).float()
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets[where])


def _trainer_class():
    from transformers import Trainer

    class _SFTTrainer(Trainer):
        real_tokens = 0  # tokens trained on, padding excluded (the throughput figure's numerator)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            tokens = int(inputs.pop("n_tokens").sum()) if "n_tokens" in inputs else 0
            if model.training:
                self.real_tokens += tokens
            loss = selective_loss(model, inputs)
            return (loss, None) if return_outputs else loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            import torch
            inputs = self._prepare_inputs(inputs)
            inputs.pop("n_tokens", None)
            with torch.no_grad():
                loss = selective_loss(model, inputs)
            return loss.detach(), None, None

    return _SFTTrainer


def _callback(on_event: Callable[[str, str, dict], None], should_stop: Callable[[], bool], trainer_tokens: Callable[[], int]):
    from transformers import TrainerCallback

    class _Events(TrainerCallback):
        def __init__(self):
            self.last = (time.monotonic(), 0)  # when, and how many tokens had been trained then
            self.cancelled = False

        def on_step_end(self, args, state, control, **kwargs):
            if should_stop():
                self.cancelled = True
                control.should_training_stop = True
                control.should_save = True  # keep the progress made so far
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            now = time.monotonic()
            seen = trainer_tokens()
            since, seen_then = self.last
            rate = (seen - seen_then) / (now - since) if now > since and seen > seen_then else None
            self.last = (now, seen)
            data = {"step": state.global_step, "max_steps": state.max_steps, "epoch": round(state.epoch or 0, 3),
                    "tokens": seen}
            for key in ("loss", "eval_loss", "learning_rate", "grad_norm"):
                if key in logs:
                    data[key] = round(float(logs[key]), 6)
            if rate:
                data["tokens_per_second"] = round(rate, 1)
            kind = "eval" if "eval_loss" in logs else "metrics"
            if "loss" in logs or "eval_loss" in logs:
                on_event(kind, f"step {state.global_step}/{state.max_steps}", data)

        def on_save(self, args, state, control, **kwargs):
            on_event("checkpoint", f"checkpoint at step {state.global_step}",
                     {"step": state.global_step, "best_metric": state.best_metric})

    return _Events()


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def train(base: TuneBase, train_rows: list[dict], dev_rows: list[dict], config: TrainConfig, run_dir: Path, *,
          on_event: Callable[[str, str, dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
          available_bytes: int | None = None) -> dict[str, Any]:
    """Fine-tune ``base`` on the rows; the adapter lands in ``run_dir/adapter``. Resumes from the newest
    checkpoint in ``run_dir/checkpoints`` when there is one. Raises :class:`Cancelled` when stopped."""
    on_event = on_event or (lambda kind, message, data: None)
    should_stop = should_stop or (lambda: False)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    started = time.monotonic()
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base.folder, local_files_only=True)
    # Rendered as the serving provider will render it: llama.cpp prefers an explicit chat_template option
    # to the model's own template; transformers uses the tokenizer's template when there is one.
    template = template_for(base.architecture, base.spec.options.get("chat_template"))
    tokenizer_template = not (base.gguf is not None and base.spec.options.get("chat_template"))
    columns = set().union(*(r.keys() for r in train_rows)) if train_rows else set()
    fmt = detect_format(columns, config.format)
    if len(dev_rows) < MIN_DEV_ROWS:  # too few to judge a checkpoint by: hold out a share of train too
        train_rows, carved = _dev_rows(train_rows, config.dev_fraction)
        dev_rows = [*dev_rows, *carved]
    train_examples, report = encode_rows(train_rows, tokenizer, template, fmt=fmt, max_length=config.max_length,
                                         tokenizer_template=tokenizer_template)
    dev_examples, dev_report = encode_rows(dev_rows, tokenizer, template, fmt=fmt, max_length=config.max_length,
                                           tokenizer_template=tokenizer_template)
    if not train_examples:
        raise InvalidRequest(f"no usable training example in {report.rows} rows ({report.skipped}; "
                             f"first: {'; '.join(report.first_errors) or 'none'})", param="dataset")
    train_blocks = pack(train_examples, max_length=config.max_length, enabled=config.packing)
    dev_blocks = pack(dev_examples, max_length=config.max_length, enabled=config.packing)
    on_event("message", f"{report.examples} training examples ({fmt}) in {len(train_blocks)} blocks, "
             f"{dev_report.examples} dev examples; {report.trained_tokens} of {report.tokens} tokens trained",
             {"train": report.to_dict(), "dev": dev_report.to_dict(), "blocks": len(train_blocks)})

    model_config = _read_config(base.folder)
    parameters = int(sum(p.numel() for p in _meta_model(base.folder).parameters()))
    lora_parameters = _lora_parameters(model_config, config)
    longest = max(len(b["input_ids"]) for b in train_blocks)
    trained_per_step = max(sum(sorted((sum(1 for x in b["labels"] if x != IGNORE) for b in train_blocks),
                                      reverse=True)[:config.batch_size]), 1)
    needed = estimate_memory(model_config, parameters=parameters, lora_parameters=lora_parameters,
                             block_tokens=longest * config.batch_size, trained_tokens=trained_per_step, longest=longest)
    free = available_bytes if available_bytes is not None else _available_memory()
    if free is not None and needed > free * 0.85:
        raise InvalidRequest(
            f"this run needs about {needed / 2**30:.1f} GiB (weights, LoRA r={config.lora_r}, {config.batch_size} "
            f"blocks of up to {longest} tokens) but {free / 2**30:.1f} GiB is free; lower batch_size or max_length",
            param="batch_size")

    model = AutoModelForCausalLM.from_pretrained(base.folder, local_files_only=True, dtype=torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM", bias="none")
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise InvalidRequest(f"LoRA cannot adapt {config.target_modules} in this model: {exc}",
                             param="target_modules") from exc

    steps_per_epoch = max(1, math.ceil(len(train_blocks) / (config.batch_size * config.grad_accum)))
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    eval_steps = config.eval_steps or max(1, steps_per_epoch // 4)
    has_dev = bool(dev_blocks)
    checkpoints = run_dir / "checkpoints"
    args = TrainingArguments(
        output_dir=str(checkpoints), use_cpu=not torch.cuda.is_available(), seed=config.seed, data_seed=config.seed,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        num_train_epochs=config.epochs, max_steps=total_steps, warmup_steps=int(config.warmup_ratio * total_steps),
        weight_decay=config.weight_decay, lr_scheduler_type="linear", logging_steps=1,
        eval_strategy="steps" if has_dev else "no", eval_steps=eval_steps, save_strategy="steps",
        save_steps=eval_steps, save_total_limit=2, load_best_model_at_end=has_dev,
        metric_for_best_model="eval_loss" if has_dev else None, greater_is_better=False if has_dev else None,
        report_to=[], disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
        save_only_model=False)
    holder: dict = {}
    events = _callback(on_event, should_stop, lambda: holder["trainer"].real_tokens)
    callbacks: list = [events]
    if has_dev and config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_blocks,
                               eval_dataset=dev_blocks if has_dev else None,
                               data_collator=_Collator(tokenizer.pad_token_id or 0), callbacks=callbacks)
    holder["trainer"] = trainer
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)  # progress goes through on_event, not print()
    resume = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if resume:
        on_event("message", f"resuming from {Path(resume).name}", {"checkpoint": Path(resume).name})
    output = trainer.train(resume_from_checkpoint=resume)
    if events.cancelled:
        raise Cancelled(f"stopped at step {trainer.state.global_step}; the checkpoint is kept")
    adapter = run_dir / "adapter"
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    history = trainer.state.log_history
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    wall = time.monotonic() - started
    return {
        "format": fmt, "data": {"train": report.to_dict(), "dev": dev_report.to_dict(),
                                "blocks": len(train_blocks)},
        "steps": trainer.state.global_step, "planned_steps": total_steps, "epochs": round(trainer.state.epoch or 0, 3),
        "train_loss": round(float(output.training_loss), 6),
        "best_dev_loss": round(float(trainer.state.best_metric), 6) if trainer.state.best_metric is not None else None,
        "first_dev_loss": round(float(evals[0]), 6) if evals else None,
        "stopped_early": bool(has_dev and trainer.state.global_step < total_steps),
        "tokens": trainer.real_tokens,
        "tokens_per_second": round(trainer.real_tokens / max(float(output.metrics.get("train_runtime", 0.0)), 1e-9), 1),
        "train_runtime_s": round(float(output.metrics.get("train_runtime", 0.0)), 1),
        "wall_s": round(wall, 1), "peak_rss_mib": _peak_rss_mib(),
        "memory_estimate_mib": round(needed / 2**20), "parameters": parameters,
        "lora_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "resumed_from": Path(resume).name if resume else None, "adapter": str(adapter),
    }


def _read_config(folder: Path) -> dict:
    import json
    return json.loads((folder / "config.json").read_text())


def _meta_model(folder: Path):
    """The model's modules without allocating its weights (to count parameters before loading)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _lora_parameters(model_config: dict, config: TrainConfig) -> int:
    hidden = int(model_config.get("hidden_size", 1024))
    inter = int(model_config.get("intermediate_size", 4 * hidden))
    layers = int(model_config.get("num_hidden_layers", 24))
    per_layer = {"q_proj": 2 * hidden, "k_proj": 2 * hidden, "v_proj": 2 * hidden, "o_proj": 2 * hidden,
                 "gate_proj": hidden + inter, "up_proj": hidden + inter, "down_proj": hidden + inter}
    return layers * config.lora_r * sum(per_layer.get(m, 2 * hidden) for m in config.target_modules)


def _available_memory() -> int | None:
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        return None
