"""``python benchmarks/vllm_parallel.py``: greedy and DoLa under tensor (and pipeline) parallelism against TP=1.

For ``--prompts`` prompts x ``--new-tokens`` tokens (32 x 64 by default) on ``--model`` (Qwen2.5-Coder-0.5B by
default, ``models pull`` it first; SmolLM2-135M's 9 attention heads do not split over 2 ranks), one engine per
layout in ``--layouts`` (``tp1,tp2`` by default; ``pp2`` adds pipeline parallelism), started one after another,
each timed after one warm-up pass (median of ``--repeats``).
Prints a table: tokens/s of greedy and DoLa (high, repetition penalty 1.2) per layout, each layout's time
against TP=1's, DoLa's cost over greedy, and whether the tokens equal TP=1's.

On CPU every rank is one process with its own cores (``engine_settings`` binds them on a one-NUMA-node machine
and splits ``--memory`` between the ranks), so on a 2-core machine TP=2 runs each rank on one core: what it
measures there is the cost of the collectives against halving each rank's matrix work. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys

from vllm_speed import timed

DOLA = {"dola_layers": "high", "repetition_penalty": 1.2}
LAYOUTS = {
    "tp1": {},
    "tp2": {"tensor_parallel_size": 2},
    "pp2": {"pipeline_parallel_size": 2},
    "tp2pp2": {"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
}


def prompts(n: int) -> list[str]:
    topics = ["a hash table", "binary search", "a linked list", "recursion", "a heap", "TCP", "a mutex"]
    return [f"Explain in a few sentences how {topics[i % len(topics)]} works ({i}):" for i in range(n)]


def layout_times(args, layout: dict, texts: list[str]) -> dict[str, tuple[float, list[list[int]]]]:
    """{method: (median seconds, token ids)} for greedy and DoLa on one engine with ``layout``."""
    from contrastive_decoding.vllm import LLM

    engine = {"max_model_len": 512, "max_num_seqs": len(texts), "gpu_memory_utilization": args.memory}
    results = {}
    with LLM(args.model, **layout, **engine) as llm:
        for method, params in (("greedy", {}), ("dola", DOLA)):
            sampling = [llm.sampling_params(method, max_new_tokens=args.new_tokens, **params) for _ in texts]
            for sp in sampling:
                sp.min_tokens = args.new_tokens  # every request generates exactly --new-tokens
            seconds, outputs = timed(
                lambda s=sampling: llm.engine.generate(texts, s, use_tqdm=False), args.repeats
            )
            results[method] = (seconds, [list(out.outputs[0].token_ids) for out in outputs])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layouts", default="tp1,tp2", help=f"comma-separated, from {', '.join(LAYOUTS)}")
    parser.add_argument(
        "--memory", type=float, default=0.3, help="gpu_memory_utilization of the whole engine"
    )
    args = parser.parse_args(argv)
    names = args.layouts.split(",")
    unknown = [name for name in names if name not in LAYOUTS]
    if unknown:
        parser.error(f"unknown layouts {unknown}; choose from {', '.join(LAYOUTS)}")
    if names[0] != "tp1":
        names = ["tp1", *[name for name in names if name != "tp1"]]  # the baseline first
    texts = prompts(args.prompts)
    results = {name: layout_times(args, LAYOUTS[name], texts) for name in names}
    tokens = len(texts) * args.new_tokens
    base = results["tp1"]
    rows = []
    for name in names:
        greedy, dola = results[name]["greedy"], results[name]["dola"]
        same = all(results[name][m][1] == base[m][1] for m in ("greedy", "dola"))
        rows.append(
            f"| {name} | {tokens / greedy[0]:.1f} | {tokens / dola[0]:.1f} | {greedy[0] / base['greedy'][0]:.2f}x | "
            f"{dola[0] / base['dola'][0]:.2f}x | {dola[0] / greedy[0]:.2f}x | {'yes' if same else 'NO'} |"
        )
    print(
        f"# vLLM parallel layouts: {args.model}, {len(texts)} prompts x {args.new_tokens} tokens (min = max), "
        f"median of {args.repeats}\n\n| layout | greedy tokens/s | DoLa tokens/s | greedy time vs tp1 | "
        "DoLa time vs tp1 | DoLa / greedy | tokens = tp1 |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
