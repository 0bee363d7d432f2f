"""``DefectdetTrainer``: ultralytics' DetectionTrainer whose data loaders follow defectdet's recipe.

The one subclass of an ultralytics class in defectdet. Its class is what ultralytics' multi-GPU
launcher pickles for each worker, together with the trainer's callbacks; the recipe travels as
one of those callbacks (:class:`defectdet.recipe.TrainDataCallback`), so every rank builds the
same sampler (callbacks alone would not do: ultralytics runs ``on_pretrain_routine_start`` on
rank 0 only). Building one runs :func:`defectdet.offline.setup_ultralytics`, which is how a
multi-GPU worker process is made offline too (the AMP check, fonts, settings) before it trains.
"""

from __future__ import annotations

from ultralytics.models.yolo.detect import DetectionTrainer

from .offline import setup_ultralytics


class DefectdetTrainer(DetectionTrainer):
    def __init__(self, *args, **kwargs):
        setup_ultralytics()
        super().__init__(*args, **kwargs)

    def get_dataloader(self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        from .recipe import TrainDataCallback

        recipe = next((cb for fns in self.callbacks.values() for cb in fns if isinstance(cb, TrainDataCallback)), None)
        if recipe is None:
            return super().get_dataloader(dataset_path, batch_size, rank, mode)
        return recipe.dataloader(self, super().get_dataloader, dataset_path, batch_size, rank, mode)
