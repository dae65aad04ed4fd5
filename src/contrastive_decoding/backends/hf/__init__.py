"""Hugging Face backend: ``custom_generate`` callables for ``model.generate``."""

from .condition import condition_contrast
from .generate import adacad, cad, contrastive_search, dola, expert_amateur, greedy, sled
from .layer_fusion import layer_fusion
from .vision import ritual, ritual_vcd, vcd, vdd

__all__ = [
    "adacad",
    "cad",
    "condition_contrast",
    "contrastive_search",
    "dola",
    "expert_amateur",
    "greedy",
    "layer_fusion",
    "ritual",
    "ritual_vcd",
    "sled",
    "vcd",
    "vdd",
]
