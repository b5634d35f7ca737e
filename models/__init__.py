"""SVFAP models. Importing this package registers them with timm."""
from .checkpoint import CheckpointMismatchError, load_checkpoint_file, load_pretrained
from .factory import MODEL_NAMES, create_model
from .flops import count_macs, count_params
from .pretrain import PretrainTPSBT
from .tpsbt import TPSBT

__all__ = ["CheckpointMismatchError", "load_checkpoint_file", "load_pretrained", "MODEL_NAMES", "create_model",
           "count_macs", "count_params", "PretrainTPSBT", "TPSBT"]
