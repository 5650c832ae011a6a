import os

# Nothing in the test suite may reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import hashlib
import sys
import time
from pathlib import Path

# DeepSpeed compiles its CPU ops on first use (about a minute); keep them between runs, one cache
# per Python environment: torch rebuilds an op whose build file names another environment's paths,
# so environments sharing a folder would rebuild it in turn, and a build killed half-way leaves
# its `lock` behind, which makes every later load wait for ever (a CI run hung 600 s on one).
_prefix = hashlib.sha1(sys.prefix.encode()).hexdigest()[:10]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser(f"~/.cache/align/torch_extensions/{_prefix}"))
# A build takes about a minute; a lock an hour old belongs to a build that was killed.
for _lock in Path(os.environ["TORCH_EXTENSIONS_DIR"]).glob("*/lock"):
    if time.time() - _lock.stat().st_mtime > 3600:
        _lock.unlink(missing_ok=True)

import pytest

from tests.tiny import build_tiny_model_dir, build_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A local byte-level BPE tokenizer with a ChatML chat template."""
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder holding a seeded random 2-layer Llama causal LM and its tokenizer."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))
