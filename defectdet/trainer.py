"""``DefectdetTrainer``: ultralytics' DetectionTrainer whose data loaders follow defectdet's recipe.

The one subclass of an ultralytics class in defectdet. Its class is what ultralytics' multi-GPU
launcher pickles for each worker, together with the trainer's callbacks; the recipe travels as
one of those callbacks (:class:`defectdet.recipe.TrainDataCallback`), so every rank builds the
same sampler (callbacks alone would not do: ultralytics runs ``on_pretrain_routine_start`` on
rank 0 only). Imported only after :func:`defectdet.offline.setup_ultralytics`.
"""

from __future__ import annotations

from ultralytics.models.yolo.detect import DetectionTrainer


class DefectdetTrainer(DetectionTrainer):
    def get_dataloader(self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        from .recipe import TrainDataCallback

        recipe = next((cb for fns in self.callbacks.values() for cb in fns if isinstance(cb, TrainDataCallback)), None)
        if recipe is None:
            return super().get_dataloader(dataset_path, batch_size, rank, mode)
        return recipe.dataloader(self, super().get_dataloader, dataset_path, batch_size, rank, mode)
