"""``ntkmonitor.integrations.transformers.NTKMonitorCallback`` in real Hugging Face ``Trainer`` runs.

A tiny BERT classifier built from a config (no download), a dataset whose items are dicts with ``input_ids``,
``attention_mask`` and ``labels`` (sequences of different lengths, padded by the Trainer's collator), full
fine-tuning and ``peft`` LoRA.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import ntkmonitor  # noqa: E402
from ntkmonitor.integrations.transformers import STATE_FILE, NTKMonitorCallback  # noqa: E402

from . import reference  # noqa: E402
from .tolerances import CALLBACK_KERNEL_RTOL, rel_err  # noqa: E402

VOCAB, MAX_LEN = 40, 12


class TokenDataset(torch.utils.data.Dataset):
    """Items ``{"input_ids", "attention_mask", "labels"}``; the label is whether token 7 occurs."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            length = int(torch.randint(4, MAX_LEN + 1, (1,), generator=g))
            ids = torch.randint(2, VOCAB, (length,), generator=g)
            self.items.append(
                {
                    "input_ids": ids,
                    "attention_mask": torch.ones(length, dtype=torch.long),
                    "labels": int((ids == 7).any()),
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate(features: list[dict]) -> dict:
    """Pad ``input_ids`` (id 0) and ``attention_mask`` to the longest item; stack ``labels``."""
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), longest, dtype=torch.long)
    mask = torch.zeros(len(features), longest, dtype=torch.long)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = f["input_ids"]
        mask[i, : len(f["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["labels"] for f in features])}


def tiny_bert(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=MAX_LEN,
        num_labels=2,
        hidden_dropout_prob=0.1,  # dropout consumes the RNG: the monitor must not
    )
    return transformers.BertForSequenceClassification(config)


def lora(model):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"])
    return peft.get_peft_model(model, config)


def train(
    tmp_path,
    model,
    callback=None,
    *,
    steps: int = 6,
    report_to=("tensorboard",),
    resume=None,
    dataset=None,
    collator=collate,
    callbacks=None,
    **kwargs,
):
    """Train ``model`` for ``steps`` steps on :class:`TokenDataset` (or ``dataset``, a class) with ``callback`` (or the
    list ``callbacks``); ``kwargs`` go to ``TrainingArguments``."""
    dataset = dataset or TokenDataset
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        report_to=list(report_to),
        logging_steps=1000,
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **{"save_strategy": "no", **kwargs},
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=dataset(48, seed=1),
        eval_dataset=dataset(24, seed=2),
        data_collator=collator,
        callbacks=callbacks if callbacks is not None else ([callback] if callback is not None else None),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_trainer_writes_the_ntk_keys_and_overlays_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = NTKMonitorCallback(every_n_steps=2, probe_size=16)
    train(tmp_path, tiny_bert(), callback)
    assert [s.step for s in callback.history] == [0, 2, 4, 6]
    events = sorted(tmp_path.rglob("events.out.tfevents*"))  # the Trainer's TensorBoard directory: runs/<date_host>
    overlays = {"ntk_actual", "ntk_predicted_K0", "ntk_predicted_Kt"}
    assert overlays <= {p.parent.name for p in events}
    logdir = next(p.parent.parent for p in events if p.parent.name == "ntk_actual")
    main = [p for p in events if p.parent == logdir]
    assert main, "the scalars are in the Trainer's own TensorBoard directory"
    tags = set()
    for path in main:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        tags |= set(acc.Tags()["scalars"]) | set(acc.Tags()["images"])
    assert "ntk/drift/kernel_distance" in tags
    assert set(callback.history[-1].scalars()) <= tags  # every scalar, under the Lightning callback's keys
    assert any(tag.startswith("ntk/0_overview/") for tag in tags)
    history = json.loads((tmp_path / "ntk_history.json").read_text())["history"]
    assert [h["step"] for h in history] == [0, 2, 4, 6]


def test_the_kernel_is_the_logits_kernel_of_the_probe(tmp_path):
    """The reference spectrum equals the float64 kernel of the initial weights on the collated probe."""
    model = tiny_bert()
    initial = tiny_bert()
    callback = NTKMonitorCallback(every_n_steps=3, probe_size=16)
    train(tmp_path, model, callback, report_to=())
    x, y = callback.tracker.x, callback.tracker.y
    assert set(x) == {"input_ids", "attention_mask"} and y.dtype == torch.long
    K = reference.kernel(initial, x, output_fn=lambda out: out.logits)  # float64 per-example autograd loop
    expected = torch.linalg.eigvalsh(K).flip(0)[:10] / 16
    got = torch.tensor(callback.history[0].top_eigenvalues, dtype=torch.float64)
    assert rel_err(got, expected) <= CALLBACK_KERNEL_RTOL


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_training_is_bit_identical_with_and_without_the_callback(tmp_path, kind):
    def model():
        base = tiny_bert()
        return lora(base) if kind == "lora" else base

    plain = train(tmp_path / "plain", model(), report_to=()).model
    callback = NTKMonitorCallback(every_n_steps=2, probe_size=16)
    monitored = train(tmp_path / "monitored", model(), callback, report_to=()).model
    assert len(callback.history) == 4
    a, b = plain.state_dict(), monitored.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def test_lora_kernel_covers_the_adapters_and_the_saved_head(tmp_path):
    callback = NTKMonitorCallback(every_n_steps=3, probe_size=16)
    trainer = train(tmp_path, lora(tiny_bert()), callback, report_to=())
    names = callback.tracker.ntk.functional_model().names
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert sorted(names) == sorted(trainable)
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert any("classifier" in n for n in names) and not any("word_embeddings" in n for n in names)
    assert callback.history[-1].parameter_change > 0  # the adapters moved


def test_resume_continues_against_the_same_reference(tmp_path):
    full = NTKMonitorCallback(every_n_steps=2, probe_size=16)
    train(tmp_path / "full", tiny_bert(), full, report_to=())
    first = NTKMonitorCallback(every_n_steps=2, probe_size=16)
    train(tmp_path / "resumed", tiny_bert(), first, steps=6, report_to=(), save_strategy="steps", save_steps=4)
    checkpoint = tmp_path / "resumed" / "checkpoint-4"
    assert (checkpoint / STATE_FILE).is_file()
    resumed = NTKMonitorCallback(every_n_steps=2, probe_size=999)  # the probe comes from the checkpoint
    train(tmp_path / "resumed", tiny_bert(seed=5), resumed, steps=6, report_to=(), resume=str(checkpoint))
    assert [s.step for s in resumed.history] == [s.step for s in full.history] == [0, 2, 4, 6]
    assert torch.equal(resumed.tracker.K0, full.tracker.K0)
    for a, b in zip(resumed.history, full.history, strict=True):
        for key, value in b.scalars().items():
            if key != "ntk/time/measure_seconds":
                assert a.scalars()[key] == pytest.approx(value, rel=1e-5, abs=1e-8), (b.step, key)


def test_other_reporters_get_the_scalars(tmp_path, monkeypatch):
    """A reporting integration (here a stand-in living in ``transformers.integrations``) receives the scalars in its
    ``on_log``, once per measurement."""
    received = []

    class FakeReporter(transformers.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and any(k.startswith("ntk/") for k in logs):
                received.append((state.global_step, logs))

    FakeReporter.__module__ = "transformers.integrations.fake"
    callback = NTKMonitorCallback(every_n_steps=3, probe_size=16)
    train(tmp_path, tiny_bert(), callbacks=[FakeReporter(), callback], report_to=())
    assert [step for step, _ in received] == [0, 3, 6]
    assert "ntk/drift/kernel_distance" in received[-1][1]


def test_outside_a_trainer_is_a_clear_error():
    callback = NTKMonitorCallback()
    state = transformers.TrainerState()
    with pytest.raises(ntkmonitor.InputError, match="Trainer"):
        callback.on_train_begin(None, state, transformers.TrainerControl(), model=tiny_bert())


def test_bad_arguments_are_rejected_at_construction():
    with pytest.raises(ntkmonitor.InputError, match="every_n_steps"):
        NTKMonitorCallback(every_n_steps=0)
    with pytest.raises(ntkmonitor.InputError, match="probe_size"):
        NTKMonitorCallback(probe_size=1)


def test_unused_columns_are_removed_from_the_probe_as_the_trainer_removes_them(tmp_path):
    """Items with a raw ``text`` column: the Trainer drops it before its collator (``remove_unused_columns``), and so
    does the probe; a collator that refuses unknown keys would otherwise fail the monitor."""

    class WithText(TokenDataset):
        def __getitem__(self, i: int) -> dict:
            return {**self.items[i], "text": "raw text"}

    def strict_collate(features: list[dict]) -> dict:
        unknown = set(features[0]) - {"input_ids", "attention_mask", "labels"}
        assert not unknown, f"unexpected columns {unknown}"
        return collate(features)

    callback = NTKMonitorCallback(every_n_steps=3, probe_size=16, strict=True)
    train(tmp_path, tiny_bert(), callback, steps=3, report_to=(), dataset=WithText, collator=strict_collate)
    assert [s.step for s in callback.history] == [0, 3]
