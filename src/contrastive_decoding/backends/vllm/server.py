"""The former home of the server code, kept so that existing commands and imports keep working.

``vllm serve ... --middleware contrastive_decoding.backends.vllm.server.ContrastiveMiddleware`` names the same
class as :data:`.middleware.MIDDLEWARE`. New code imports :mod:`.middleware` (the ASGI middleware) and
:mod:`.launch` (``contrastive-decoding serve``'s ``vllm serve`` arguments and runner).
"""

from __future__ import annotations

from .launch import run_vllm_serve, serve_arguments
from .middleware import ContrastiveMiddleware, methods_document

__all__ = ["ContrastiveMiddleware", "methods_document", "run_vllm_serve", "serve_arguments"]
