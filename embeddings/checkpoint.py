"""Checkpoints: a plain (unsharded) state dict plus a small JSON of what is needed to rebuild
the model. Loaded with ``torch.load(weights_only=True)``: tensors only, never pickle objects."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from embeddings.config import ModelConfig
from pipelines.errors import ArtifactError
from pipelines.io import atomic_path

if TYPE_CHECKING:  # the model imports TorchRec, which a served version never needs
    from embeddings.model import TableSizes, TwoTower

WEIGHTS = "model.pt"
META = "model.json"


def save_checkpoint(
    folder: Path, state_dict: dict[str, torch.Tensor], sizes: TableSizes, cfg: ModelConfig
) -> Path:
    """Write `model.pt` and `model.json` into `folder`, each atomically."""
    folder = Path(folder)
    with atomic_path(folder / WEIGHTS) as tmp, tmp.open("wb") as fh:
        # to a file object, not a path: torch names the archive after a path's (temporary,
        # random) file name, and the same weights must give the same bytes in every run
        torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, fh)
    with atomic_path(folder / META) as tmp:
        tmp.write_text(
            json.dumps({"sizes": asdict(sizes), "model": cfg.model_dump(mode="json")}, indent=2)
        )
    return folder


def load_state_dict(folder: Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The saved tensors; `mmap`: backed by the file's pages (read-only use: a served version's
    embedding tables load at once, and processes serving one version share them)."""
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise ArtifactError(path, "model weights not found (train the model first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated or foreign files: torch raises many types
        raise ArtifactError(path, f"cannot be read as a weights-only state dict: {exc}") from None


def load_meta(folder: Path) -> tuple[TableSizes, ModelConfig]:
    path = Path(folder) / META
    if not path.is_file():
        raise ArtifactError(path, "model description not found (train the model first)")
    meta = json.loads(path.read_text())
    from embeddings.model import TableSizes

    return TableSizes(**meta["sizes"]), ModelConfig.model_validate(meta["model"])


def load_checkpoint(folder: Path, device: torch.device | None = None) -> TwoTower:
    """A plain `TwoTower` with the saved weights, in eval mode, on one process."""
    from embeddings.model import TwoTower

    sizes, cfg = load_meta(folder)
    model = TwoTower(sizes, cfg)
    model.load_state_dict(load_state_dict(folder))
    return model.to(device or torch.device("cpu")).eval()
