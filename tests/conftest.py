import os

# Nothing in the test suite may reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# DeepSpeed compiles its CPU ops on first use (about a minute); keep them between runs.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/align/torch_extensions"))

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
