"""Contrastive decoding methods for transformers and vLLM."""
