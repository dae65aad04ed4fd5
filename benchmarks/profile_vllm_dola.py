"""``python benchmarks/profile_vllm_dola.py``: where a vLLM DoLa step spends its time (torch profiler, top ops).

The engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so the profiler sees the model, the
wrapper's early exits and the DoLa math. ``--prompts`` x ``--new-tokens`` DoLa ("high", repetition penalty 1.2) on
``--model``, after one warm-up pass; prints the top ops by self CPU time, then the same for plain greedy on the same
engine, so the two tables can be read side by side.
"""

from __future__ import annotations

import argparse
import os

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rows", type=int, default=14, help="rows of each profile table")
    args = parser.parse_args()

    from torch.profiler import ProfilerActivity, profile
    from vllm_speed import ENGINE, fixed_length_pass, prompts

    from contrastive_decoding.vllm import LLM

    texts = prompts(args.prompts)
    with LLM(args.model, **ENGINE) as llm:
        for method, params in (("dola", {"dola_layers": "high", "repetition_penalty": 1.2}), ("greedy", {})):
            run = fixed_length_pass(llm, method, params, texts, args.new_tokens)
            run()  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            total = sum(event.self_cpu_time_total for event in prof.key_averages()) / 1e6
            print(
                f"\n# {method}: {args.prompts} prompts x {args.new_tokens} tokens, {args.model}; {total:.2f} s self CPU"
            )
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
