"""A tiny random BERT with MiniLM's real WordPiece tokenizer, for quick runs and the scale test.

2 layers, width 32 (about 1 M parameters, nearly all in the 30,522-word embedding), so a
step costs milliseconds, but any English text (demo tickets, fortunes) tokenises exactly
as it does for MiniLM. Built once per process in a temporary folder; nothing downloaded.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

TINY_DESCRIPTION = "random BERT, 2 layers, hidden 32, MiniLM's tokenizer (~1.0 M params)"


@cache
def tiny_minilm() -> str:
    """Path of the tiny model folder (built on first call)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from common.models import default_model_dir

    folder = Path(tempfile.mkdtemp(prefix="privatune-tiny-"))
    atexit.register(shutil.rmtree, folder, True)
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir(), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
