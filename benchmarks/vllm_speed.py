"""``python benchmarks/speed.py --backend vllm``: the vLLM backend against vLLM greedy and the HF backend.

For ``--vllm-prompts`` prompts x ``--vllm-new-tokens`` tokens (64 x 64 by default) on ``--model``, in one run:

- plain vLLM greedy (the stock architecture, no wrapper) and greedy through our wrapper: what a request that asks
  for no method pays on a contrastive engine;
- DoLa (high, repetition penalty 1.2) through the wrapper, its ratio to wrapper greedy and to its compute floor
  ``(model + (1 + L) LM heads) / (model + head)`` computed from the parameter counts;
- SLED (every layer, repetition penalty 1.02) through the wrapper, its ratio to wrapper greedy and to DoLa;
- a mixed batch (half greedy, half DoLa) against the two halves run alone;
- each method's throughput against the HF backend at batch 8 on the same prompts;
- with ``--pair``: expert-amateur on the Qwen2.5-Coder pair against expert greedy + amateur greedy (16 x 32).

Engines are started one after another (0.2 of RAM each for the KV cache) and timed after one warm-up pass; the
median of ``--repeats`` passes is reported.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from contrastive_decoding.api import generate_outputs
from contrastive_decoding.decoding.dola import candidate_layers
from contrastive_decoding.models import load_model_and_tokenizer, resolve_model_path

ENGINE = {"gpu_memory_utilization": 0.2, "max_model_len": 1024, "max_num_seqs": 64}
DOLA = {"dola_layers": "high", "repetition_penalty": 1.2}
SLED = {"repetition_penalty": 1.02}  # the reference's defaults: every layer 0 .. N-1
# The Qwen pair in float32 (1.5B + 0.5B, ~8 GB of weights) does not fit in 0.2 of 24 GB: vLLM-CPU's budget holds
# the weights too, so 0.2 leaves a negative KV-cache budget and the engine refuses to start.
PAIR_ENGINE = {**ENGINE, "gpu_memory_utilization": 0.6, "max_num_seqs": 16}


def prompts(n: int) -> list[str]:
    return context_prompts(n)[0]


def context_prompts(n: int) -> tuple[list[str], list[str]]:
    """(prompts with a context, the same prompts without it): the CAD workload of speed.py."""
    from speed import prompts as speed_prompts

    return speed_prompts(n)


def paired_pass(engine, method: str, texts: list[str], free: list[str], n: int):
    """CAD / AdaCAD generating ``n`` tokens per prompt (``ignore_eos``: a pair takes no ``min_tokens``)."""
    sampling = [engine.sampling_params(method, max_new_tokens=n, context_free_prompt=f) for f in free]
    for sp in sampling:
        sp.ignore_eos = True
    return lambda: engine.engine.generate(texts, sampling, use_tqdm=False)


def timed(run, repeats: int) -> tuple[float, object]:
    result = run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def dola_floor(model_path: str) -> tuple[float, int]:
    """(model + (1 + L) heads) / (model + head) from parameter counts, L = DoLa 'high' candidates."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    head = config.vocab_size * config.hidden_size
    layers = candidate_layers("high", config.num_hidden_layers, bool(config.tie_word_embeddings))
    model, _ = load_model_and_tokenizer(model_path)
    body = sum(
        p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n
    )
    return (body + (1 + len(layers)) * head) / (body + head), len(layers)


def fixed_length_pass(engine, method: str, params: dict, texts: list[str], n: int):
    """A closure generating exactly ``n`` tokens for every prompt with ``method`` on our ``LLM`` engine."""
    sampling = [engine.sampling_params(method, max_new_tokens=n, **params) for _ in texts]
    for sp in sampling:
        sp.min_tokens = n
    return lambda: engine.engine.generate(texts, sampling, use_tqdm=False)


def stock_greedy_time(path: str, texts: list[str], n: int, repeats: int) -> float:
    """Plain vLLM greedy on the stock architecture (no wrapper, no processors)."""
    from vllm import LLM as VllmLLM
    from vllm import SamplingParams

    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # as our LLM does: both engines use both cores
    engine = VllmLLM(model=path, dtype="float32", enforce_eager=True, **ENGINE)
    params = SamplingParams(max_tokens=n, min_tokens=n, temperature=0)
    seconds = timed(lambda: engine.generate(texts, params, use_tqdm=False), repeats)[0]
    engine.llm_engine.engine_core.shutdown()
    return seconds


def wrapper_times(model: str, texts: list[str], n: int, repeats: int) -> dict[str, float]:
    from contrastive_decoding.vllm import LLM

    llm = LLM(model, **ENGINE)
    half = len(texts) // 2
    times = {
        "greedy": timed(fixed_length_pass(llm, "greedy", {}, texts, n), repeats)[0],
        "dola": timed(fixed_length_pass(llm, "dola", DOLA, texts, n), repeats)[0],
        "sled": timed(fixed_length_pass(llm, "sled", SLED, texts, n), repeats)[0],
        "greedy_half": timed(fixed_length_pass(llm, "greedy", {}, texts[:half], n), repeats)[0],
        "dola_half": timed(fixed_length_pass(llm, "dola", DOLA, texts[half:], n), repeats)[0],
    }
    mixed = [llm.sampling_params("greedy", max_new_tokens=n) for _ in texts[:half]]
    mixed += [llm.sampling_params("dola", max_new_tokens=n, **DOLA) for _ in texts[half:]]
    for sp in mixed:
        sp.min_tokens = n
    times["mixed"] = timed(lambda: llm.engine.generate(texts, mixed, use_tqdm=False), repeats)[0]
    # CAD's floor: plain greedy over the same prompts plus their context-free twins, as separate requests
    with_context, without_context = context_prompts(len(texts))
    both = with_context + without_context
    plain = [llm.sampling_params("greedy", max_new_tokens=n) for _ in both]
    for sp in plain:
        sp.ignore_eos = True
    times["greedy_with_twins"] = timed(lambda: llm.engine.generate(both, plain, use_tqdm=False), repeats)[0]
    for method in ("cad", "adacad"):
        times[method] = timed(paired_pass(llm, method, with_context, without_context, n), repeats)[0]
    llm.shutdown()
    return times


def hf_times(model_name: str, texts: list[str], n: int) -> dict[str, float]:
    model, tokenizer = load_model_and_tokenizer(model_name)

    def run(method: str, params: dict):
        def go():
            with torch.no_grad():
                generate_outputs(model, tokenizer, texts, method, max_new_tokens=n, batch_size=8, **params)

        return go

    with_context, without_context = context_prompts(len(texts))

    def run_cad(method: str):
        def go():
            with torch.no_grad():
                generate_outputs(
                    model, tokenizer, with_context, method, context_free_prompts=without_context, max_new_tokens=n,
                    batch_size=8,
                )  # fmt: skip

        return go

    return {
        "greedy": timed(run("greedy", {}), 1)[0],
        "dola": timed(run("dola", DOLA), 1)[0],
        "sled": timed(run("sled", SLED), 1)[0],
        "cad": timed(run_cad("cad"), 1)[0],
        "adacad": timed(run_cad("adacad"), 1)[0],
    }


def vllm_main(args) -> int:
    texts = prompts(args.vllm_prompts)
    n = args.vllm_new_tokens
    path = str(resolve_model_path(args.model))
    stock = stock_greedy_time(path, texts, n, args.repeats)
    ours = wrapper_times(args.model, texts, n, args.repeats)
    hf = hf_times(args.model, texts, n)
    floor, num_candidates = dola_floor(path)
    from transformers import AutoConfig

    num_layers = AutoConfig.from_pretrained(path).num_hidden_layers
    tokens = len(texts) * n
    half = len(texts) // 2
    rows = [
        f"| vLLM greedy, stock model | {tokens / stock:.1f} | 1.00x | - | {hf['greedy'] / stock:.1f}x |",
        f"| vLLM greedy, our wrapper | {tokens / ours['greedy']:.1f} | {ours['greedy'] / stock:.2f}x of stock | - | "
        f"{hf['greedy'] / ours['greedy']:.1f}x |",
        f"| vLLM DoLa (high, {num_candidates} candidates) | {tokens / ours['dola']:.1f} | "
        f"{ours['dola'] / ours['greedy']:.2f}x greedy | {ours['dola'] / ours['greedy'] / floor:.2f}x its floor "
        f"({floor:.2f}x) | {hf['dola'] / ours['dola']:.1f}x |",
        f"| vLLM DoLa vs its floor counted from stock greedy | - | {ours['dola'] / stock:.2f}x stock greedy | "
        f"{ours['dola'] / (stock * floor):.2f}x (target <= 1.15x) | - |",
        f"| vLLM SLED (all {num_layers} layers) | {tokens / ours['sled']:.1f} | "
        f"{ours['sled'] / ours['greedy']:.2f}x greedy, {ours['sled'] / ours['dola']:.2f}x DoLa | - | "
        f"{hf['sled'] / ours['sled']:.1f}x |",
        f"| mixed: {half} greedy + {len(texts) - half} DoLa | {tokens / ours['mixed']:.1f} | "
        f"{ours['mixed'] / (ours['greedy_half'] + ours['dola_half']):.2f}x of the halves alone | - | - |",
        f"| vLLM greedy over the CAD prompts + their twins ({2 * len(texts)} requests) | "
        f"{tokens / ours['greedy_with_twins']:.1f} | {ours['greedy_with_twins'] / ours['greedy']:.2f}x greedy | - | - |",
    ]
    for method in ("cad", "adacad"):
        rows.append(
            f"| vLLM {method} (twin scheduled with each request) | {tokens / ours[method]:.1f} | "
            f"{ours[method] / ours['greedy']:.2f}x greedy | {ours[method] / ours['greedy_with_twins']:.2f}x greedy "
            f"with twins (target <= 1.1x) | {hf[method] / ours[method]:.1f}x |"
        )
    print(
        f"# vLLM backend: {args.model}, {len(texts)} prompts x {n} tokens (min = max), float32, CPU, median of "
        f"{args.repeats}\n\n| run | tokens/s | time ratio | vs compute floor | speed vs HF backend (batch 8) |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows)
    )
    if args.pair:
        print(pair_table(args))
    if args.prefill_tokens:
        print(memory_table(args.model, args.prefill_tokens))
    return 0


PREFILL_SCRIPT = """
import os, sys, threading, time
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core in this process, so its RSS is ours
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
import psutil
from vllm import SamplingParams, TokensPrompt
kind, path, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine_args = dict(max_model_len=tokens + 8, max_num_batched_tokens=tokens + 8, max_num_seqs=4,
                   gpu_memory_utilization=0.2, enable_prefix_caching=False)
if kind == "stock":
    from vllm import LLM
    engine = LLM(model=path, dtype="float32", enforce_eager=True, **engine_args)
else:
    from contrastive_decoding.vllm import LLM as Ours
    engine = Ours(path, **engine_args).engine
prompt = TokensPrompt(prompt_token_ids=[(17 * i) % 1000 + 10 for i in range(tokens)])
params = SamplingParams(max_tokens=1, temperature=0)
if kind == "ours-dola":
    params = Ours.sampling_params(type("Front", (), {"engine": engine})(), "dola", max_new_tokens=1)
process, peak, running = psutil.Process(), [0], [True]
def sample():
    while running[0]:
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.001)
engine.generate([prompt], params, use_tqdm=False)  # warm-up: the allocator's first growth
base = process.memory_info().rss
thread = threading.Thread(target=sample); thread.start()
engine.generate([prompt], params, use_tqdm=False)
running[0] = False; thread.join()
print(f"RESULT {base} {peak[0]}")
"""


def prefill_peak(kind: str, path: str, tokens: int) -> tuple[int, int]:
    """(RSS before, peak RSS during) one ``tokens``-token prefill on a fresh in-process engine (``kind``:
    ``stock`` vLLM or ``ours``), in its own interpreter."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", PREFILL_SCRIPT, kind, path, str(tokens)],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    base, peak = (int(value) for value in line.split()[1:])
    return base, peak


def memory_table(model: str, tokens: int) -> str:
    path = str(resolve_model_path(model))
    stock_base, stock_peak = prefill_peak("stock", path, tokens)
    ours_base, ours_peak = prefill_peak("ours", path, tokens)
    dola_base, dola_peak = prefill_peak("ours-dola", path, tokens)
    mib = 1024 * 1024
    return (
        f"\n# Peak memory of one {tokens}-token prefill (greedy, {model}, float32, in-process engine, RSS sampled "
        f"every ms)\n\n| engine | RSS before | peak RSS | peak - before |\n|---|---|---|---|\n"
        f"| stock vLLM | {stock_base / mib:.0f} MiB | {stock_peak / mib:.0f} MiB | {(stock_peak - stock_base) / mib:.0f} MiB |\n"
        f"| contrastive wrapper (all layers captured) | {ours_base / mib:.0f} MiB | {ours_peak / mib:.0f} MiB | "
        f"{(ours_peak - ours_base) / mib:.0f} MiB |\n"
        f"| contrastive wrapper, the prompt asking for DoLa | {dola_base / mib:.0f} MiB | {dola_peak / mib:.0f} MiB | "
        f"{(dola_peak - dola_base) / mib:.0f} MiB |\n\n"
        f"peak RSS ours / stock = {ours_peak / stock_peak:.3f} greedy, {dola_peak / stock_peak:.3f} DoLa "
        "(target within 5%)\n"
    )


def pair_greedy_time(model: str, texts: list[str], n: int, repeats: int, amateur: str | None = None) -> float:
    from contrastive_decoding.vllm import LLM

    with LLM(model, amateur_model=amateur, **PAIR_ENGINE) as llm:
        return timed(fixed_length_pass(llm, "greedy", {}, texts, n), repeats)[0]


def expert_amateur_times(args, texts: list[str], n: int) -> tuple[float, float]:
    from contrastive_decoding.vllm import LLM

    with LLM(args.expert, amateur_model=args.amateur, **PAIR_ENGINE) as llm:
        contrast = timed(fixed_length_pass(llm, "expert_amateur", {}, texts, n), args.repeats)[0]
        greedy = timed(fixed_length_pass(llm, "greedy", {}, texts, n), args.repeats)[0]
    return contrast, greedy


def pair_table(args) -> str:
    texts, n = prompts(16), 32
    expert_amateur, with_amateur_greedy = expert_amateur_times(args, texts, n)
    expert_greedy = pair_greedy_time(args.expert, texts, n, args.repeats)
    amateur_greedy = pair_greedy_time(args.amateur, texts, n, args.repeats)
    tokens = len(texts) * n
    floor = expert_greedy + amateur_greedy
    return (
        f"\n# vLLM expert-amateur: {args.expert} / {args.amateur}, {len(texts)} x {n}\n\n| run | tokens/s |\n"
        f"|---|---|\n| expert greedy | {tokens / expert_greedy:.1f} |\n| amateur greedy | {tokens / amateur_greedy:.1f} |\n"
        f"| greedy on the expert+amateur engine | {tokens / with_amateur_greedy:.1f} |\n"
        f"| expert_amateur | {tokens / expert_amateur:.1f} |\n\n"
        f"expert_amateur time / (expert greedy + amateur greedy) = {expert_amateur / floor:.2f}x (target <= 1.1)\n"
    )
