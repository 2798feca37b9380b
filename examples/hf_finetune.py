"""Fine-tuning in the kernel regime? A Hugging Face ``Trainer`` with ``NTKMonitorCallback``, full and LoRA.

Run:
    python examples/hf_finetune.py                  # about 40 s on 2 CPU cores
    python examples/hf_finetune.py --quick          # seconds (smoke test)
    python -m tensorboard.main --logdir hf_runs     # then open the printed URL

A tiny BERT-style encoder is built from a config (no download) and **pretrained** on a synthetic token task
(classify whether a sequence contains token 7), so that "pretrained" means something. It is then
**fine-tuned** on a second task (regress +1/-1: are there more tokens below the middle of the vocabulary than
above it?) twice, with ``NTKMonitorCallback`` watching each run:

- **full fine-tuning**: every weight trains (AdamW, the ``Trainer``'s default);
- **LoRA** (``peft``): rank-4 adapters on the attention's query and value projections plus the new head;
  the base weights are frozen, so the kernel is the adapters' (and the head's) eNTK.

Malladi et al. (2023, https://arxiv.org/abs/2210.05643) found that fine-tuning often stays in the kernel
regime; TensorBoard shows, run by run, whether it did here (``ntk/drift/...``, the verdict) and how the
predicted learnability compares with the actual one (``ntk/0_overview/learnability``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import torch
import transformers

from ntkmonitor.integrations.transformers import NTKMonitorCallback

VOCAB, MAX_LEN = 64, 16


class TokenTask(torch.utils.data.Dataset):
    """Items ``{"input_ids", "attention_mask", "labels"}``, sequences of 6 to 16 tokens (ids 2..63).

    ``task="contains7"``: label 1 when token 7 occurs (classification); ``task="balance"``: +1.0 when more tokens
    are below 33 than above, else -1.0 (regression).
    """

    def __init__(self, n: int, task: str, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            length = int(torch.randint(6, MAX_LEN + 1, (1,), generator=g))
            ids = torch.randint(2, VOCAB, (length,), generator=g)
            if task == "contains7":
                label = int((ids == 7).any())
            else:
                label = 1.0 if (ids < 33).sum() > (ids >= 33).sum() else -1.0
            mask = torch.ones(length, dtype=torch.long)
            self.items.append({"input_ids": ids, "attention_mask": mask, "labels": label})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate(features: list[dict]) -> dict:
    """Pad ``input_ids`` (id 0) and ``attention_mask`` to the longest item of the batch; stack ``labels``."""
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), longest, dtype=torch.long)
    mask = torch.zeros(len(features), longest, dtype=torch.long)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = f["input_ids"]
        mask[i, : len(f["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["labels"] for f in features])}


def config(num_labels: int, hidden: int) -> transformers.BertConfig:
    """A tiny BERT: 2 layers, 4 heads, ``hidden`` wide."""
    return transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=MAX_LEN,
        num_labels=num_labels,
    )


def arguments(out: Path, steps: int, lr: float, report: bool) -> transformers.TrainingArguments:
    return transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=32,
        learning_rate=lr,
        report_to=["tensorboard"] if report else [],
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def pretrain(out: Path, steps: int, hidden: int) -> transformers.BertModel:
    """The encoder after ``steps`` steps on ``contains7`` (its accuracy is printed)."""
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config(2, hidden))
    data, held_out = TokenTask(4096, "contains7", seed=1), TokenTask(512, "contains7", seed=2)
    trainer = transformers.Trainer(
        model=model, args=arguments(out, steps, 1e-3, report=False), train_dataset=data, data_collator=collate
    )
    trainer.train()
    batch = collate([held_out[i] for i in range(len(held_out))])
    labels = batch.pop("labels")
    with torch.no_grad():
        accuracy = (model.eval()(**batch).logits.argmax(-1) == labels).float().mean()
    print(f"pretrained on 'contains token 7' for {steps} steps: held-out accuracy {accuracy:.3f}", flush=True)
    return model.bert


def finetune(encoder: transformers.BertModel, kind: str, out: Path, steps: int, hidden: int, probe_size) -> dict:
    """Fine-tune a copy of ``encoder`` with a new regression head on ``balance``; ``kind``: ``full`` or ``lora``."""
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config(1, hidden))
    model.bert.load_state_dict(encoder.state_dict())
    lr = 1e-3
    if kind == "lora":
        import peft

        lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"])
        model = peft.get_peft_model(model, lora)
        lr = 5e-3
    callback = NTKMonitorCallback(probe_size=probe_size, loss="mse")
    trainer = transformers.Trainer(
        model=model,
        args=arguments(out / kind, steps, lr, report=True),
        train_dataset=TokenTask(2048, "balance", seed=3),
        eval_dataset=TokenTask(512, "balance", seed=4),
        data_collator=collate,
        callbacks=[callback],
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    last = callback.history[-1]
    measured = sum(s.seconds for s in callback.history)
    count, probe = len(callback.history), callback.tracker.M
    print(
        f"{kind} fine-tuning: {trainable:,} trainable parameters, {steps} steps in {seconds:.1f} s, "
        f"{count} NTK measurements ({measured:.1f} s) on a {probe}-point probe"
    )
    print(
        f"  verdict at step {last.step}: {last.verdict} (kernel distance {last.kernel_distance:.3g}, "
        f"relative parameter change {last.parameter_change:.3g})"
    )
    print(
        f"  learnability: actual {last.learnability_actual:.3f}; predicted from the initial kernel "
        f"{last.learnability_predicted_init:.3f} [{last.learnability_predicted_init_lower:.3f}, "
        f"{last.learnability_predicted_init_upper:.3f}], from the current kernel "
        f"{last.learnability_predicted_current:.3f}",
        flush=True,
    )
    return {
        "kind": kind,
        "verdict": last.verdict,
        "kernel_distance": last.kernel_distance,
        "learnability_actual": last.learnability_actual,
        "learnability_predicted_init": last.learnability_predicted_init,
        "learnability_predicted_current": last.learnability_predicted_current,
        "history": callback.history,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    """Pretrain, fine-tune twice (full, LoRA), print the comparison and the TensorBoard command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--out", default="hf_runs", help="output and TensorBoard directory (default hf_runs)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # a tiny model on a few shared cores: one thread is faster than torch's pool
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    hidden, pre_steps, steps, probe = (16, 20, 12, 32) if args.quick else (64, 400, 300, "auto")
    out = Path(args.out)
    encoder = pretrain(out / "pretrain", pre_steps, hidden)
    results = [finetune(encoder, kind, out, steps, hidden, probe) for kind in ("full", "lora")]
    python = os.path.relpath(sys.executable)
    python = python if not python.startswith("..") else sys.executable
    print(f"TensorBoard: {shlex.join([python, '-m', 'tensorboard.main', '--logdir', str(out)])}")
    return results


if __name__ == "__main__":
    main()
