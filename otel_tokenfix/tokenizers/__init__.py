"""Tokenizer loading: offline, from local directories or files, never ``trust_remote_code``."""

from __future__ import annotations

from .load import load_tokenizer

__all__ = ["load_tokenizer"]
