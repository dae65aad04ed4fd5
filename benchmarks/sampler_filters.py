"""The sampling filters side by side: diversity of open-ended continuations and time against plain sampling.

    python benchmarks/sampler_filters.py                       # SmolLM2-135M, 8 WikiText prefixes x 64 tokens
    python benchmarks/sampler_filters.py --all                 # + epsilon_cutoff and eta_cutoff
    python benchmarks/sampler_filters.py --num-prompts 4 --max-new-tokens 32 --repeats 1

Every setting samples the same prompts in one batch with the same seed (each row's draws keyed on (seed, output
position)), ``min_new_tokens = max_new_tokens`` so every setting produces the same number of tokens, all through
the same decode loop (``custom_generate=cd.hf.greedy``, seeded): the time ratio is the filter's own cost.
Settings are timed in interleaved rounds and the median of ``--repeats`` rounds is reported. rep-2 / diversity
are the open-ended task's word-level definitions (``open_ended_quality.repetition_scores``); distinct-2 is the
share of distinct token bigrams in each continuation, averaged over the prompts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import contrastive_decoding as cd
from contrastive_decoding.benchmarks.metrics.open_ended_quality.open_ended_quality import repetition_scores
from contrastive_decoding.models import load_model_and_tokenizer

REPO = Path(__file__).resolve().parent.parent
PROMPTS_FILE = REPO.parent / "shared" / "data" / "open_ended_prompts" / "wikitext_prompts.jsonl"

SETTINGS = {
    "temperature 1.0": {},
    "min_p=0.1": {"min_p": 0.1},
    "top_n_sigma=1.0": {"top_n_sigma": 1.0},
}
MORE_SETTINGS = {"epsilon_cutoff=3e-4": {"epsilon_cutoff": 3e-4}, "eta_cutoff=3e-4": {"eta_cutoff": 3e-4}}


def distinct_2(token_ids: list[int]) -> float:
    bigrams = list(zip(token_ids, token_ids[1:], strict=False))
    return len(set(bigrams)) / len(bigrams) if bigrams else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=Path, default=PROMPTS_FILE)
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--all", action="store_true", help="also epsilon_cutoff and eta_cutoff")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    model, tokenizer = load_model_and_tokenizer(args.model)
    rows = [json.loads(line) for line in args.prompts.read_text().splitlines()[: args.num_prompts]]
    tokenizer.padding_side = "left"
    encoded = tokenizer([row["prefix_text"] for row in rows], return_tensors="pt", padding=True)
    prompt_length = encoded["input_ids"].shape[1]

    def run(filters: dict, new_tokens: int = args.max_new_tokens) -> list[list[int]]:
        out = model.generate(
            **encoded, custom_generate=cd.hf.greedy, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            seed=args.seed, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id, **filters,
        )  # fmt: skip
        return out[:, prompt_length:].tolist()

    settings = {**SETTINGS, **(MORE_SETTINGS if args.all else {})}
    times: dict[str, list[float]] = {name: [] for name in settings}
    outputs: dict[str, list[list[int]]] = {}
    run({}, 2)  # warm-up
    print(f"warm-up done; {args.repeats} rounds of {len(settings)} settings", flush=True)
    for _ in range(args.repeats):
        for name, filters in settings.items():
            start = time.perf_counter()
            outputs[name] = run(filters)
            times[name].append(time.perf_counter() - start)
            print(f"  {name}: {times[name][-1]:.1f} s", flush=True)

    base = statistics.median(times["temperature 1.0"])
    print(
        f"{args.model}, {len(rows)} prompts x {args.max_new_tokens} tokens, batch {len(rows)}, seed {args.seed}, "
        f"median of {args.repeats} interleaved rounds\n"
    )
    print("| setting | distinct-2 (tokens) | rep-2 (words, %) | diversity | time (s) | vs temperature 1.0 |")
    print("|---|---|---|---|---|---|")
    for name in settings:
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in outputs[name]]
        words = repetition_scores(texts)
        d2 = statistics.mean(distinct_2(ids) for ids in outputs[name])
        median = statistics.median(times[name])
        print(
            f"| {name} | {d2:.3f} | {words['rep-2']:.2f} | {words['diversity']:.3f} | {median:.2f} | "
            f"{median / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
