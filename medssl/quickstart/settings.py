"""What the quick-start job does, as one frozen record: data sizes, the pretraining recipe and the fine-tuning budget.

Two presets: :data:`FULL` (the main job: 16 + 8 phantoms, 100 Models Genesis steps, 3 seeds x 2 arms x 300
fine-tuning steps on class-balanced 32 x 32 x 16 crops, two runs at a time; measured 15 minutes wall on 2 CPU cores,
of which 2.3 pretraining and 12.4 fine-tuning, so well above its 5-minute aim) and :data:`QUICK` (the smallest
settings that still run every stage, for the test suite). Every number lands in ``metrics.json`` (``settings``), so a
result always says how it was made.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_DIR", "FULL", "QUICK", "QuickstartSettings"]

#: the YAML recipes of the pretraining stage: ``configs/quickstart/`` of the source checkout (``pip install -e``)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "quickstart"


@dataclass(frozen=True)
class QuickstartSettings:
    """One quick-start run.

    Data: ``archive_cases`` unlabelled phantom CT series (DICOM, crawled, pretrained on) and a separate labelled
    study of ``study_cases`` phantoms (other seeds, never seen in pretraining) split by case into ``n_test`` test,
    ``n_val`` validation and the rest training cases, of which ``n_labelled`` carry labels.

    Pretraining: the engine's LightningCLI with ``pretrain_config`` (a file in :data:`CONFIG_DIR`) plus
    ``pretrain_overrides`` (dotted ``--key=value`` arguments), for ``pretrain_epochs`` epochs.

    Fine-tuning: the segmentation protocol (:func:`medssl.finetune.seg_protocol.run_seg_protocol`) with the
    pretrained arm's method ``transfer`` (``whole``: encoder and decoder, needs a card with a dense decoder;
    ``finetune``: encoder only) and ``scratch``, the same network, data, crops (``roi_size``), epochs,
    ``min_steps``, learning rate, weight decay and warmup, once per seed in ``seeds``.
    """

    archive_cases: int = 16
    study_cases: int = 8
    n_val: int = 2
    n_test: int = 4
    n_labelled: int = 2
    shape: tuple[int, int, int] = (64, 64, 48)
    seed: int = 0  # phantoms, split, labelled cases, pretraining
    seeds: tuple[int, ...] = (0, 1, 2)  # fine-tuning seeds (network initialisation and crops), both arms
    pretrain_config: str = "genesis_basicunet.yaml"
    pretrain_epochs: int = 25
    pretrain_overrides: tuple[str, ...] = ()
    roi_size: tuple[int, int, int] = (32, 32, 16)
    finetune_epochs: int = 5
    min_steps: int = 300
    batch_size: int = 2
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    transfer: str = "whole"
    #: crop-centre weight per label value (background, organ, tumour): half the crops centred on the ~100-voxel
    #: tumour, which foreground/background sampling almost never picks (None: foreground / background crops)
    class_ratios: tuple[float, ...] | None = (1.0, 1.0, 2.0)
    #: fine-tuning runs trained at once (one process, one thread each); None: min(2, CPU cores)
    workers: int | None = None
    patience: int | None = None
    overlay_cases: int = 3
    #: torch intra-op threads while running (None: torch's default). One: these small 3D convolutions gain little from
    #: a second thread, and on a busy 2-core machine two threads made fine-tuning ~12x slower (measured)
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.n_labelled < 1 or self.n_val < 1 or self.n_test < 1:
            raise ValueError(f"need n_labelled, n_val and n_test >= 1, got {self.n_labelled}, {self.n_val}, "
                             f"{self.n_test}")
        if self.n_labelled + self.n_val + self.n_test > self.study_cases:
            raise ValueError(f"n_labelled + n_val + n_test = {self.n_labelled + self.n_val + self.n_test} exceeds "
                             f"study_cases={self.study_cases}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"need at least one fine-tuning seed, without repeats, got {self.seeds}")
        if self.transfer not in ("finetune", "whole"):
            raise ValueError(f"transfer must be 'finetune' (encoder only) or 'whole' (encoder and decoder), got "
                             f"{self.transfer!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be None or >= 1, got {self.workers}")
        if self.archive_cases < 2 or self.pretrain_epochs < 1 or self.finetune_epochs < 1:
            raise ValueError("need archive_cases >= 2 (one is held out for the validation loss) and >= 1 epochs")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


FULL = QuickstartSettings()

QUICK = QuickstartSettings(
    archive_cases=3, study_cases=4, n_val=1, n_test=1, n_labelled=2, shape=(40, 40, 24), pretrain_epochs=1,
    pretrain_overrides=("--data.patch_size=[32,32,16]", "--data.batch_size=2",
                        "--model.init_args.encoder_kwargs.features=[4,4,8,8,16,4]"),
    seeds=(0,), roi_size=(32, 32, 16), finetune_epochs=1, min_steps=0, overlay_cases=1,
)
