"""Speed of every decoding method against plain greedy, measured side by side in one run.

    python benchmarks/speed.py                      # SmolLM2-135M, batch 1 and 8, + Qwen pair, + transformers 4.55
    python benchmarks/speed.py --no-pair --no-reference --max-new-tokens 16

For each batch size, the same ``--num-prompts`` prompts (a context + a question each; the question alone is the
context-free prompt of CAD / AdaCAD) are generated with ``min_new_tokens = max_new_tokens``, so every method
produces the same number of tokens. Methods are timed in interleaved rounds (greedy, method, ..., greedy, ...)
and the median of ``--repeats`` rounds is reported; the ratio is method time / plain greedy time from the same
rounds. Plain greedy is transformers' own ``model.generate`` (no ``custom_generate``).

With ``--reference`` (default when ``.venv-ref`` exists; ``make bench-reference`` creates it), transformers
4.55.4's own contrastive search and DoLa run on the same prompts in a subprocess, interleaved with ours; the
table gives our speed-up over it and whether the tokens are identical (batch 1; its batched outputs are not
what its rows get alone, see the README).

The Qwen2.5-Coder pair (1.5B expert, 0.5B amateur) times expert-amateur decoding against expert greedy +
amateur greedy (``--no-pair`` skips it; it needs the two models pulled).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import contrastive_decoding as cd
from contrastive_decoding.models import load_model_and_tokenizer, resolve_model_path

REPO = Path(__file__).resolve().parent.parent
REFERENCE_PYTHON = REPO / ".venv-ref" / "bin" / "python"
REFERENCE_SCRIPT = REPO / "benchmarks" / "reference_transformers455.py"

CONTEXT_QUESTIONS = [
    (
        "Argentina won the 2022 FIFA World Cup, beating France on penalties in the final.",
        "Who won the 2022 World Cup?",
    ),
    (
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        "When was the Eiffel Tower completed?",
    ),
    (
        "Marie Curie was the first person to win Nobel Prizes in two sciences.",
        "What is Marie Curie known for?",
    ),
    (
        "The Amazon river carries more water than any other river on Earth.",
        "Which river carries the most water?",
    ),
    ("Python was created by Guido van Rossum and first released in 1991.", "Who created Python?"),
    ("Mount Everest is 8,849 metres tall according to a 2020 survey.", "How tall is Mount Everest?"),
    ("The honeybee dance tells other bees the direction of flowers.", "What does the honeybee dance do?"),
    ("Jupiter has the shortest day of the planets, about ten hours.", "Which planet has the shortest day?"),
]

# (label, method, parameters); "greedy" is transformers' plain generate.
METHODS = [
    ("greedy", "greedy", {}),
    ("contrastive_search", "contrastive_search", {"penalty_alpha": 0.6, "top_k": 4}),
    ("dola", "dola", {"dola_layers": "high", "repetition_penalty": 1.2}),
    # SLED at the reference's defaults (every layer), and on DoLa's "high" layers for a like-for-like cost
    ("sled", "sled", {"repetition_penalty": 1.02}),
    ("sled_high", "sled", {"sled_layers": "high", "repetition_penalty": 1.02}),
    ("cad", "cad", {"cad_alpha": 1.0}),
    ("adacad", "adacad", {}),
]
TARGETS = {"contrastive_search": 1.6, "dola": 1.3, "cad": 1.5, "adacad": 1.5}
REFERENCE_METHODS = {"greedy", "contrastive_search", "dola"}


def prompts(n: int) -> tuple[list[str], list[str]]:
    rows = [CONTEXT_QUESTIONS[i % len(CONTEXT_QUESTIONS)] for i in range(n)]
    with_context = [f"{context}\nQuestion: {question}\nAnswer:" for context, question in rows]
    without_context = [f"Question: {question}\nAnswer:" for _, question in rows]
    return with_context, without_context


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    output_ids: list[list[int]] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.median


def make_pass(
    model,
    tokenizer,
    method: str,
    params: dict,
    batch_size: int,
    texts: list[str],
    free: list[str],
    new_tokens: int,
) -> Callable[[], list[list[int]]]:
    """A closure generating every prompt once (in batches) and returning the new token ids per prompt."""
    function = None if method == "greedy" else getattr(cd.hf, method)
    batches = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        kwargs = dict(params)
        if method in ("cad", "adacad"):
            encoded_free = tokenizer(free[start : start + batch_size], return_tensors="pt", padding=True)
            kwargs.update(
                context_free_input_ids=encoded_free["input_ids"],
                context_free_attention_mask=encoded_free["attention_mask"],
            )
        if function is not None:
            kwargs["custom_generate"] = function
        batches.append((encoded, kwargs))

    def run() -> list[list[int]]:
        outputs = []
        with torch.no_grad():
            for encoded, kwargs in batches:
                sequences = model.generate(
                    **encoded,
                    do_sample=False,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    **kwargs,
                )
                outputs.extend(sequences[:, encoded["input_ids"].shape[1] :].tolist())
        return outputs

    return run


def time_rounds(passes: dict[str, Callable[[], list[list[int]]]], repeats: int) -> dict[str, Timing]:
    timings = {label: Timing() for label in passes}
    for run in passes.values():  # warm-up
        run()
    for _ in range(repeats):
        for label, run in passes.items():
            start = time.perf_counter()
            output_ids = run()
            timings[label].seconds.append(time.perf_counter() - start)
            timings[label].output_ids = output_ids
            timings[label].tokens = sum(len(ids) for ids in output_ids)
    return timings


def reference_pass(
    model_dir: str, method: str, params: dict, batch_size: int, prompts_file: Path, args
) -> dict:
    command = [
        str(REFERENCE_PYTHON),
        str(REFERENCE_SCRIPT),
        "--model-dir",
        model_dir,
        "--method",
        method,
        "--batch-size",
        str(batch_size),
        "--num-prompts",
        str(args.num_prompts),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--prompts-file",
        str(prompts_file),
        "--repeats",
        "1",
    ]
    if method == "contrastive_search":
        command += ["--penalty-alpha", str(params["penalty_alpha"]), "--top-k", str(params["top_k"])]
    if method == "dola":
        command += [
            "--dola-layers",
            params["dola_layers"],
            "--repetition-penalty",
            str(params["repetition_penalty"]),
        ]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_reference(model_dir: str, batch_size: int, texts: list[str], args) -> dict[str, Timing]:
    """transformers 4.55.4's greedy / contrastive search / DoLa: ``--repeats`` interleaved rounds, one
    subprocess per pass (each reports the time of its own pass, model loading and warm-up excluded)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        handle.write("".join(json.dumps(text) + "\n" for text in texts))
        prompts_file = Path(handle.name)
    timings = {label: Timing() for label, method, _ in METHODS if method in REFERENCE_METHODS}
    try:
        for _ in range(args.repeats):
            for label, method, params in METHODS:
                if method not in REFERENCE_METHODS:
                    continue
                result = reference_pass(model_dir, method, params, batch_size, prompts_file, args)
                timings[label].seconds.append(result["seconds"])
                timings[label].tokens = result["new_tokens"]
                timings[label].output_ids = result["output_ids"]
    finally:
        prompts_file.unlink()
    return timings


def fmt_ratio(value: float | None, target: float | None = None, higher_is_better: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}x"
    if target is not None:
        ok = value >= target if higher_is_better else value <= target
        text += f" ({'ok' if ok else 'MISS'} {'>=' if higher_is_better else '<='} {target:g})"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--num-prompts", type=int, default=8, help="prompts per pass (same for every batch size)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(label for label, _, _ in METHODS))
    parser.add_argument(
        "--reference", action=argparse.BooleanOptionalAction, default=REFERENCE_PYTHON.exists()
    )
    parser.add_argument("--pair", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--expert", default="qwen2.5-coder-1.5b")
    parser.add_argument("--amateur", default="qwen2.5-coder-0.5b")
    parser.add_argument("--pair-prompts", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw timings here")
    parser.add_argument("--vllm-prompts", type=int, default=64, help="--backend vllm: prompts per pass")
    parser.add_argument(
        "--prefill-tokens",
        type=int,
        default=4096,
        help="--backend vllm: peak memory of one prefill this long (0: skip)",
    )
    parser.add_argument(
        "--vllm-new-tokens", type=int, default=64, help="--backend vllm: new tokens per prompt"
    )
    args = parser.parse_args(argv)
    if args.backend == "vllm":
        from vllm_speed import vllm_main

        return vllm_main(args)
    selected = set(args.methods.split(",")) | {"greedy"}
    methods = [m for m in METHODS if m[0] in selected]
    if args.reference and not REFERENCE_PYTHON.exists():
        parser.error(f"--reference needs {REFERENCE_PYTHON} (run `make bench-reference`)")

    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(args.model)
    texts, free = prompts(args.num_prompts)
    print(
        f"# speed: {args.model}, {args.num_prompts} prompts x {args.max_new_tokens} new tokens, "
        f"median of {args.repeats} interleaved rounds, torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    header = "| method | batch | tokens/s | time vs greedy | target | 4.55 tokens/s | ours vs 4.55 | same tokens as 4.55 |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    raw: dict = {}
    per_batch: dict[int, dict[str, Timing]] = {}
    for batch_size in args.batch_sizes:
        passes = {
            label: make_pass(model, tokenizer, method, params, batch_size, texts, free, args.max_new_tokens)
            for label, method, params in methods
        }
        timings = time_rounds(passes, args.repeats)
        per_batch[batch_size] = timings
        reference = (
            run_reference(str(resolve_model_path(args.model)), batch_size, texts, args)
            if args.reference
            else {}
        )
        greedy = timings["greedy"].median
        for label, _, _ in methods:
            timing = timings[label]
            ref = reference.get(label)
            same = "-"
            if ref is not None and label != "greedy":
                equal = sum(a == b for a, b in zip(timing.output_ids, ref.output_ids, strict=True))
                same = f"{equal}/{len(timing.output_ids)}"
            lines.append(
                f"| {label} | {batch_size} | {timing.tokens_per_s:.1f} | {fmt_ratio(timing.median / greedy)} | "
                f"{fmt_ratio(timing.median / greedy, TARGETS.get(label)) if batch_size == 1 and label in TARGETS else '-'} | "
                f"{f'{ref.tokens_per_s:.1f}' if ref else '-'} | "
                f"{fmt_ratio(ref.median / timing.median, 1.5 if label != 'greedy' else None, True) if ref else '-'} | "
                f"{same} |"
            )
            raw[f"{label}@{batch_size}"] = {"seconds": timing.seconds, "tokens": timing.tokens}
            if ref:
                raw[f"4.55:{label}@{batch_size}"] = {"seconds": ref.seconds, "tokens": ref.tokens}
    print("\n".join(lines))

    if len(args.batch_sizes) > 1:
        low, high = min(args.batch_sizes), max(args.batch_sizes)
        print(f"\n| method | tokens/s at batch {high} / batch {low} | target |\n|---|---|---|")
        for label, _, _ in methods:
            scale = per_batch[high][label].tokens_per_s / per_batch[low][label].tokens_per_s
            print(f"| {label} | {scale:.2f}x | {fmt_ratio(scale, 3.0, True)} |")

    if args.pair:
        print(pair_table(args, raw))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))
    return 0


def pair_table(args, raw: dict) -> str:
    """Expert-amateur vs expert greedy + amateur greedy, batch 1, on the Qwen2.5-Coder pair."""
    expert, tokenizer = load_model_and_tokenizer(args.expert)
    amateur, _ = load_model_and_tokenizer(args.amateur)
    texts, free = prompts(args.pair_prompts)
    n = args.max_new_tokens
    passes = {
        "expert greedy": make_pass(expert, tokenizer, "greedy", {}, 1, texts, free, n),
        "amateur greedy": make_pass(amateur, tokenizer, "greedy", {}, 1, texts, free, n),
        "expert_amateur": make_pass(
            expert, tokenizer, "expert_amateur", {"amateur_model": amateur}, 1, texts, free, n
        ),
    }
    timings = time_rounds(passes, args.repeats)
    floor = timings["expert greedy"].median + timings["amateur greedy"].median
    ratio = timings["expert_amateur"].median / floor
    for label, timing in timings.items():
        raw[f"pair:{label}@1"] = {"seconds": timing.seconds, "tokens": timing.tokens}
    rows = "\n".join(f"| {label} | {t.tokens_per_s:.2f} | {t.median:.2f} |" for label, t in timings.items())
    return (
        f"\n# expert-amateur: {args.expert} / {args.amateur}, {args.pair_prompts} prompts x {n} tokens, batch 1\n\n"
        f"| run | tokens/s | seconds |\n|---|---|---|\n{rows}\n\n"
        f"expert_amateur time / (expert greedy + amateur greedy) = {fmt_ratio(ratio, 1.1)}\n"
    )


if __name__ == "__main__":
    sys.exit(main())
