"""Drop-in ``custom_generate`` functions for transformers' ``model.generate``.

import contrastive_decoding as cd
model.generate(**inputs, custom_generate=cd.hf.contrastive_search, penalty_alpha=0.6, top_k=4)
"""

from .backends.hf import (
    adacad,
    cad,
    condition_contrast,
    contrastive_search,
    dola,
    expert_amateur,
    greedy,
    layer_fusion,
    ritual,
    ritual_vcd,
    vcd,
    vdd,
)

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
    "vcd",
    "vdd",
]
