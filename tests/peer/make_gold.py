"""Gold outputs of transformers 4.55.4's own contrastive search / DoLa / greedy on tiny upstream models.

Two steps, one command (run from the repository root once ``make bench-reference`` made ``.venv-ref``)::

    PYTHONPATH=src .venv/bin/python tests/peer/make_gold.py --reference-python .venv-ref/bin/python

1. In our environment (transformers 5.x) each tiny model of ``upstream_configs`` is built exactly as the tests
   build it (seeded random init) and saved to a temporary checkpoint, with a weight fingerprint.
2. The reference environment (transformers 4.55.4, core ``generate``, no ``custom_generate``) loads each
   checkpoint and decodes every case: each prompt alone, and the prompts as one left-padded batch. The batch
   outputs are recorded for information (4.55 does not give a padded row what it gets alone: its repetition
   penalty counts the padding, its DoLa picks one layer for the whole batch); the tests compare our batch
   rows with 4.55's *alone* outputs.

EOS is a token each model actually emits (one that 4.55's greedy decoding of the first prompt generates), and in
the ``pad_is_eos`` cases pad == EOS, so that a left-padded row's prompt holds EOS tokens: the case where a
repetition penalty that sees padding pushes a row away from EOS. Writes ``tests/peer/gold/<family>.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLD = HERE / "gold"
MAX_NEW_TOKENS = 12
NUM_LAYERS = 6  # upstream's 2 layers give DoLa a single candidate layer; 6 gives it several
INITIALIZER_RANGE = 0.2  # upstream's 0.02 makes near-uniform distributions: float-noise argmax ties
PROMPT_LENGTHS = [5, 9, 3]

# (method, generate kwargs of 4.55, pad_is_eos)
CASES: list[tuple[str, dict, bool]] = [
    ("greedy", {}, False),
    ("contrastive_search", {"penalty_alpha": 0.6, "top_k": 4}, False),
    ("contrastive_search", {"penalty_alpha": 0.6, "top_k": 4, "repetition_penalty": 1.2}, True),
    ("contrastive_search", {"penalty_alpha": 0.3, "top_k": 6}, False),
    ("dola", {"dola_layers": "high"}, False),
    ("dola", {"dola_layers": "low", "repetition_penalty": 1.2}, True),
    ("dola", {"dola_layers": [0, 2, 4], "repetition_penalty": 1.2}, True),
    ("greedy", {"repetition_penalty": 1.2}, True),
]


def gold_model(family: str):
    """The tiny model the gold is for (built in our environment, by the tests too)."""
    from tests.peer.upstream_configs import upstream_model

    return upstream_model(family, num_hidden_layers=NUM_LAYERS, initializer_range=INITIALIZER_RANGE)


def gold_prompts() -> list[list[int]]:
    import torch

    generator = torch.Generator().manual_seed(1234)
    return [torch.randint(3, 97, (n,), generator=generator).tolist() for n in PROMPT_LENGTHS]


def save_checkpoints(root: Path) -> dict[str, dict]:
    """Step 1 (transformers 5.x): the tiny models as checkpoints, with fingerprints."""
    from tests.peer.upstream_configs import FAMILIES, weight_fingerprint

    saved = {}
    for family in FAMILIES:
        model = gold_model(family)
        model.save_pretrained(root / family)
        saved[family] = {"path": str(root / family), "fingerprint": weight_fingerprint(model)}
    return saved


def reference_generate(checkpoint: str, family: str, prompts: list[list[int]]) -> dict:
    """Step 2 (transformers 4.55.4): decode every case, alone and as a left-padded batch."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(checkpoint)
    rope = getattr(config, "rope_parameters", None)  # a 5.x checkpoint: 4.55 reads rope_theta
    if isinstance(rope, dict) and "rope_theta" in rope:
        config.rope_theta = rope["rope_theta"]
    model = AutoModelForCausalLM.from_pretrained(checkpoint, config=config, torch_dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None

    def run(rows: list[list[int]], pad: int, eos: int | None, **kwargs) -> list[list[int]]:
        length = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=MAX_NEW_TOKENS,
                pad_token_id=pad,
                eos_token_id=eos,
                **kwargs,
            )
        return out[:, length:].tolist()

    first = run(prompts[:1], pad=0, eos=None)[0]
    eos = first[len(first) // 2]  # a token the model emits: some rows stop early
    pad = 0 if eos != 0 else 1
    cases = []
    for method, kwargs, pad_is_eos in CASES:
        pad_id = eos if pad_is_eos else pad
        alone = [run([p], pad_id, eos, **kwargs)[0] for p in prompts]
        batched = run(prompts, pad_id, eos, **kwargs)
        up_to_eos = [row[: row.index(eos) + 1] if eos in row else row for row in batched]
        cases.append(
            {
                "method": method,
                "params": kwargs,
                "pad_token_id": pad_id,
                "alone": alone,
                "batched_455": batched,
                "batched_455_rows_equal_alone": [row == a for row, a in zip(up_to_eos, alone, strict=True)],
            }
        )
    return {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "family": family,
        "eos_token_id": eos,
        "max_new_tokens": MAX_NEW_TOKENS,
        "prompts": prompts,
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference-python", help="the transformers 4.55.4 interpreter (.venv-ref/bin/python)"
    )
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)  # step 2, run by step 1
    parser.add_argument("--family", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.checkpoint:  # step 2, in the reference environment
        prompts = json.loads(sys.stdin.read())
        json.dump(reference_generate(args.checkpoint, args.family, prompts), sys.stdout)
        return 0

    if not args.reference_python:
        parser.error("--reference-python is required")
    GOLD.mkdir(exist_ok=True)
    prompts = gold_prompts()
    with tempfile.TemporaryDirectory() as tmp:
        for family, saved in save_checkpoints(Path(tmp)).items():
            done = subprocess.run(
                [args.reference_python, __file__, "--checkpoint", saved["path"], "--family", family],
                input=json.dumps(prompts),
                capture_output=True,
                text=True,
            )
            if done.returncode:
                raise RuntimeError(f"the reference run for {family} failed:\n{done.stderr}")
            gold = json.loads(done.stdout)
            gold.update(
                num_hidden_layers=NUM_LAYERS,
                initializer_range=INITIALIZER_RANGE,
                weight_fingerprint=saved["fingerprint"],
                generator="tests/peer/make_gold.py",
            )
            lines = ",\n".join("  " + json.dumps(case) for case in gold.pop("cases"))
            prompt_list = json.dumps(gold.pop("prompts"))
            header = json.dumps(gold, indent=1)[:-2] + f',\n "prompts": {prompt_list}'
            (GOLD / f"{family}.json").write_text(f'{header},\n "cases": [\n{lines}\n ]\n}}\n')
            print(f"{family}: eos {gold['eos_token_id']}, written {GOLD / f'{family}.json'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))  # the repository root: `tests.peer` for step 1
    sys.exit(main())
