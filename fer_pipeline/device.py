"""Where tensors go: chosen from config and from what the machine has, never hard-coded."""

from __future__ import annotations


def resolve_device(requested: str):
    """``auto`` picks CUDA when there is one, else the CPU; anything else (cpu, cuda, cuda:1) is taken as given.

    Returns a torch.device. torch is imported here, where it is used, so that jobs that never touch a
    network (feature extraction) do not pay for its import.
    """
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
