"""``DefectdetTrainer``: ultralytics' DetectionTrainer whose data loaders follow defectdet's recipe.

The one subclass of an ultralytics class in defectdet. Its class is what ultralytics' multi-GPU
launcher pickles for each worker, together with the trainer's callbacks; the recipe travels as
one of those callbacks (:class:`defectdet.recipe.TrainDataCallback`), so every rank builds the
same sampler (callbacks alone would not do: ultralytics runs ``on_pretrain_routine_start`` on
rank 0 only). Building one runs :func:`defectdet.offline.setup_ultralytics`, which is how a
multi-GPU worker process is made offline too (the AMP check, fonts, settings) before it trains.

It also owns defectdet's one change to ``optimizer=auto`` (ultralytics' default): a short run
(at most ``SHORT_RUN_ITERATIONS`` optimizer steps as ultralytics counts them, where its rule picks
AdamW at lr0 = 0.002·5/(4+nc), a rate fitted for fine-tuning pretrained weights, and accumulates
gradients to a nominal batch ``nbs`` of 64) that trains from scratch (a ``*.yaml`` model, no
``pretrained=`` weights file) gets AdamW at ``SCRATCH_LR0`` with an optimizer step every batch
(``nbs`` = batch) instead; why, with the measurements (bench/quality.py's arms ``+lr3`` and
``+lr3+nbs16`` on DeepPCB's rare split): docs/quality.md. Like ultralytics' own auto (which ignores
``lr0`` and ``momentum``), it ignores ``lr0``, ``momentum`` and ``nbs``; a user's ``.pt``, an explicit
optimizer or a long run keep ultralytics' choice.
"""

from __future__ import annotations

from pathlib import Path

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import LOGGER

from .offline import setup_ultralytics

SCRATCH_LR0 = 0.003  # AdamW lr0 of a short from-scratch run under optimizer=auto
SHORT_RUN_ITERATIONS = 10000  # ultralytics' optimizer=auto picks AdamW at or below this many steps


def trains_from_scratch(args) -> bool:
    """True when ultralytics builds the model from a yaml with random weights (no .pt, no
    ``pretrained=<weights file>``)."""
    return str(getattr(args, "model", "")).lower().endswith((".yaml", ".yml")) and not isinstance(
        getattr(args, "pretrained", None), (str, Path)
    )


def scratch_optimizer(name, iterations: float, from_scratch: bool):
    """``(optimizer, lr0, momentum)`` that defectdet puts in place of ``optimizer=auto``, or None to
    leave ultralytics' rule alone (not auto, not from scratch, or a long run)."""
    if str(name).lower() != "auto" or not from_scratch or iterations > SHORT_RUN_ITERATIONS:
        return None
    return "AdamW", SCRATCH_LR0, 0.9


class DefectdetTrainer(DetectionTrainer):
    def __init__(self, *args, **kwargs):
        setup_ultralytics()
        super().__init__(*args, **kwargs)

    def get_dataloader(self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        from .recipe import TrainDataCallback

        recipe = next(
            (cb for fns in self.callbacks.values() for cb in fns if isinstance(cb, TrainDataCallback)), None
        )
        if recipe is None:
            return super().get_dataloader(dataset_path, batch_size, rank, mode)
        return recipe.dataloader(self, super().get_dataloader, dataset_path, batch_size, rank, mode)

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        choice = scratch_optimizer(name, iterations, trains_from_scratch(self.args))
        if choice is not None:
            name, lr, momentum = choice
            # an optimizer step every batch: ultralytics computed accumulate (and scaled the weight decay by
            # batch x accumulate / nbs) from nbs just before building the optimizer, and reads both afterwards
            # (the warm-up, a rebuild); with nbs = batch and accumulate 1 that scale is 1
            self.args.nbs, self.accumulate, decay = self.batch_size, 1, self.args.weight_decay
            LOGGER.info(
                f"optimizer: optimizer=auto, training from scratch ({iterations} iterations at ultralytics' "
                f"nominal batch): {name}(lr={lr}, momentum={momentum}), a step every batch "
                f"(nbs={self.args.nbs}); defectdet.trainer.SCRATCH_LR0; set optimizer= to choose your own"
            )
            # recorded like ultralytics' own auto choice, so a resumed run rebuilds the same optimizer
            self.args.optimizer, self.args.lr0, self.args.momentum = name, lr, momentum
            self.args.warmup_bias_lr = 0.0  # as ultralytics' auto sets it for AdamW
        return super().build_optimizer(model, name, lr, momentum, decay, iterations)
