"""The model zoo's sizes: parameters and forward FLOPs per image (what `robustscale models` prints and the
planner's compute model reads)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..data.info import dataset_info, dataset_normalization
from ..models import check_model_name, count_parameters, create_model


def model_rows(names: list[str], dataset: str, num_classes: int | None = None) -> list[dict]:
    """Parameter count and forward FLOPs per image of each model at the dataset's input size."""
    info = dataset_info(dataset)
    in_chans, h, w = info.input_size
    classes = num_classes or info.num_classes or 1000
    rows = []
    for name in names:
        check_model_name(name)
        with torch.device("meta"):  # no memory, no init cost: shapes only
            model = create_model(name, num_classes=classes, in_chans=in_chans,
                                 **dataset_normalization(info.name)).eval()
            with FlopCounterMode(display=False) as counter:
                model(torch.empty(1, in_chans, h, w))
        rows.append({"model": name, "parameters": count_parameters(model),
                     "forward_flops_per_image": int(counter.get_total_flops()),
                     "input_size": [in_chans, h, w], "num_classes": classes})
    return rows
