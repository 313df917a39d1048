"""Batched inference: trunk features and head embeddings of a dataset, in eval mode."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    device: torch.device,
    desc: str = "embed",
    amp: bool = False,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (features (N, D), embeddings (N, E)) as float32 arrays, in dataset order.

    ``batch_size=1`` is needed for variable-size images (the reference's uncropped influence
    transform). Embeddings are ``head(features)``, not normalised.
    """
    model.eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=device.type == "cuda"
    )
    feats, embs = [], []
    for x, _, _ in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not progress):
        x = x.to(device, non_blocking=True)
        with torch.autocast("cuda", enabled=amp and device.type == "cuda"):
            f = model.features(x)
        f = f.float()
        feats.append(f.cpu())
        embs.append(model.head(f).cpu())
    d = model.head.in_features
    e = model.head.out_features
    if not feats:
        return np.zeros((0, d), np.float32), np.zeros((0, e), np.float32)
    return torch.cat(feats).numpy(), torch.cat(embs).numpy()
