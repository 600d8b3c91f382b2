"""Models and datasets for elrbench, in registries keyed by name (installed as elrbench.workloads)."""
from .datasets import DATASETS, Dataset, check_data, data_options, load_dataset, random_crop_flip
from .models import MODELS, ElrModel, check_depth, create_model
from .registry import DataError, UnknownNameError, WorkloadError

__all__ = [
    "DATASETS", "Dataset", "check_data", "data_options", "load_dataset", "random_crop_flip",
    "MODELS", "ElrModel", "check_depth", "create_model",
    "DataError", "UnknownNameError", "WorkloadError",
]
