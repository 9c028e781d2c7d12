"""Tokenizers: byte-level BPE in pure Python, with Hugging Face ``tokenizers`` when present."""

from webgpt2.tokenizers.byte_pair_tokenizer import (
    BytePairTokenizer,
    StreamingDetokenizer,
    TokenizerError,
    bytes_to_unicode,
    gpt2_split_pattern,
)
from webgpt2.tokenizers.start_end_packer import StartEndPacker

__all__ = [
    "BytePairTokenizer",
    "StartEndPacker",
    "StreamingDetokenizer",
    "TokenizerError",
    "bytes_to_unicode",
    "gpt2_split_pattern",
]
