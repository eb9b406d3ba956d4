"""The demo's reranker: MiniLM's cosines plus BM25, scored from a (query, passage) pair.

Copied into the model folder that ``scripts/build_reranker.py`` builds; ``config.json``'s
``auto_map`` points ``AutoModelForSequenceClassification`` here, so Infinity (which loads models
with ``trust_remote_code``, its default) serves it on ``/rerank`` like any cross-encoder, and
``transformers`` loads it with ``trust_remote_code=True``. Without that flag loading fails with
transformers' own message instead of silently giving another model.

This is **not a cross-encoder**: query and passage never attend to each other. The score of a pair
is ``logit_scale * (cosine_scale * (cos + prefix_weight * cos_prefix) + lexical_weight * bm25)
+ logit_offset`` where

- ``cos`` is all-MiniLM-L6-v2's cosine between the query and the passage, each encoded alone
  (mean pooling, as sentence-transformers does; the passage cut at ``encoder_max_length`` tokens),
  the very score dense retrieval ranked by;
- ``cos_prefix`` is the same cosine with only the passage's first ``prefix_length`` tokens: where
  a passage says what it is (a docstring's name and summary line; a node's metadata lines too),
  before the details that blur a whole-passage vector;
- ``bm25`` is Okapi BM25 of the query's WordPiece tokens in the passage's (``bm25_k1``,
  ``bm25_b``, ``avg_length``), with the ``idf`` buffer computed from the corpus it reranks.

Reranking by it adds to retrieval the exact-word evidence dense vectors blur ("recursively",
"zip or tar", "dict" in ``groupdict``) and a second look at the passage's opening.
``logit_scale`` and ``logit_offset`` only spread the logits for Infinity's sigmoid; they never
change an order.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class HybridRerankerConfig(BertConfig):  # type: ignore[misc]
    model_type = "infinity_rag_hybrid_reranker"

    def __init__(
        self,
        cosine_scale: float = 20.0,
        lexical_weight: float = 0.5,
        prefix_weight: float = 0.0,
        prefix_length: int = 48,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        avg_length: float = 40.0,
        encoder_max_length: int = 256,
        logit_scale: float = 0.25,
        logit_offset: float = -3.5,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cosine_scale = cosine_scale
        self.lexical_weight = lexical_weight
        self.prefix_weight = prefix_weight
        self.prefix_length = prefix_length
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.avg_length = avg_length
        self.encoder_max_length = encoder_max_length
        self.logit_scale = logit_scale
        self.logit_offset = logit_offset
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id


class HybridRerankerForSequenceClassification(BertPreTrainedModel):  # type: ignore[misc]
    config_class = HybridRerankerConfig
    base_model_prefix = "bert"

    def __init__(self, config: HybridRerankerConfig) -> None:
        super().__init__(config)
        self.num_labels = 1
        self.bert = BertModel(config, add_pooling_layer=False)
        self.register_buffer("idf", torch.zeros(config.vocab_size))
        self.post_init()

    def _segments(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks of the query's and the passage's own tokens (no [CLS], [SEP] or padding)."""
        c = self.config
        real = (attention_mask == 1) & (input_ids != c.cls_token_id) & (input_ids != c.sep_token_id)
        return real & (token_type_ids == 0), real & (token_type_ids == 1)

    def _embed(self, input_ids: torch.Tensor, mask: torch.Tensor, limit: int) -> torch.Tensor:
        """Mean-pooled, normalised MiniLM embeddings of each row's masked tokens, encoded alone
        as ``[CLS] tokens [SEP]`` (at most ``limit`` tokens in all)."""
        c = self.config
        rows = [ids[m][: limit - 2] for ids, m in zip(input_ids, mask, strict=True)]
        width = max(len(r) for r in rows) + 2
        ids = torch.zeros(len(rows), width, dtype=input_ids.dtype, device=input_ids.device)
        att = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            n = len(r)
            ids[i, 0], ids[i, n + 1] = c.cls_token_id, c.sep_token_id
            ids[i, 1 : n + 1] = r
            att[i, : n + 2] = 1
        hidden = self.bert(input_ids=ids, attention_mask=att).last_hidden_state
        weights = att.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def _bm25(
        self, input_ids: torch.Tensor, qmask: torch.Tensor, pmask: torch.Tensor
    ) -> torch.Tensor:
        c = self.config
        batch, vocab = input_ids.shape[0], self.idf.shape[0]
        ids = input_ids.long()
        tf = torch.zeros(batch, vocab, dtype=self.idf.dtype, device=ids.device)
        tf.scatter_add_(1, ids, pmask.to(tf.dtype))
        asked = torch.zeros_like(tf)
        asked.scatter_add_(1, ids, qmask.to(tf.dtype))
        asked = (asked > 0).to(tf.dtype)
        length = pmask.sum(1, keepdim=True).to(tf.dtype)
        norm = c.bm25_k1 * (1 - c.bm25_b + c.bm25_b * length / c.avg_length)
        saturated = tf * (c.bm25_k1 + 1) / (tf + norm)
        return (asked * self.idf * saturated).sum(1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            raise ValueError("the reranker scores (query, passage) pairs: token_type_ids needed")
        c = self.config
        qmask, pmask = self._segments(input_ids, attention_mask, token_type_ids)
        query = self._embed(input_ids, qmask, c.encoder_max_length)
        cos = (query * self._embed(input_ids, pmask, c.encoder_max_length)).sum(-1)
        if c.prefix_weight:
            prefix = self._embed(input_ids, pmask, c.prefix_length + 2)  # + [CLS] and [SEP]
            cos = cos + c.prefix_weight * (query * prefix).sum(-1)
        bm25 = self._bm25(input_ids, qmask, pmask)
        raw = c.cosine_scale * cos.to(bm25.dtype) + c.lexical_weight * bm25
        logits = (c.logit_scale * raw + c.logit_offset).unsqueeze(-1)
        return SequenceClassifierOutput(logits=logits)
