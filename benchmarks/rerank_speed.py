"""Speed of rerank (RankGen's over-generate-and-rerank and beam search) against plain sampling and greedy,
side by side in one run.

    python benchmarks/rerank_speed.py                         # SmolLM2-135M, 4 prompts in one batch, 32 tokens
    python benchmarks/rerank_speed.py --num-samples 8 --max-new-tokens 64 --repeats 5

Every configuration generates ``max_new_tokens`` tokens per prompt (``min_new_tokens`` = ``max_new_tokens``)
for the same batch of prompts through ``model.generate``; the configurations are timed in interleaved rounds
and the median of ``--repeats`` rounds is reported, with the ratio to greedy (transformers' own generate) from
the same rounds. Sampling: ``top_p=0.9`` (RankGen's), seed 0.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import contrastive_decoding as cd
from contrastive_decoding.models import load_model_and_tokenizer, use_left_padding

PROMPTS = [
    "The history of the city begins in the Roman period, when",
    "The species was first described in 1887 by",
    "After the war, the band released their second album,",
    "The tower stands on a hill above the river and",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, tokenizer = load_model_and_tokenizer(args.model)
    use_left_padding(tokenizer)
    encoded = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    n, tokens = args.num_samples, args.max_new_tokens
    common = dict(max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=tokenizer.pad_token_id)
    sampled = dict(do_sample=True, top_p=0.9, top_k=0, seed=0)
    rerank = dict(custom_generate=cd.hf.rerank, lm_tokenizer=tokenizer, num_samples=n, **sampled)
    configs = {
        "greedy (transformers)": dict(do_sample=False),
        "plain sampling (top_p 0.9, seeded)": dict(custom_generate=cd.hf.plain, **sampled),
        f"rerank N={n}, minilm": dict(rerank),
        f"rerank N={n}, contrastive_search": dict(rerank, scorer="contrastive_search"),
        f"rerank beam 2 x {n}, segments of {tokens // 4}, minilm": dict(
            rerank, beam_width=2, segment_length=max(1, tokens // 4)
        ),
    }
    with torch.no_grad():
        for config in configs.values():  # warm-up (and the MiniLM scorer loaded once)
            model.generate(**encoded, **common, **config)
        times: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.repeats):
            for name, config in configs.items():
                start = time.perf_counter()
                model.generate(**encoded, **common, **config)
                times[name].append(time.perf_counter() - start)
    greedy = statistics.median(times["greedy (transformers)"])
    print(
        f"{args.model}, batch of {len(PROMPTS)} prompts, {tokens} new tokens each, median of {args.repeats}"
    )
    print(f"{'configuration':55s} {'seconds':>8s} {'x greedy':>9s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:55s} {median:8.2f} {median / greedy:9.2f}")


if __name__ == "__main__":
    main()
