"""One seed of the experiment: catalogue -> CF embeddings -> frozen LM -> phase 1 (Q-Former pretraining)
-> phase 2 (adaptor training with the LM frozen) -> next-item ranking by LM likelihood.

Arms (all over the same CF embeddings, the same frozen LM, the same phase-2 batches, steps and lr):

- ``mlp``: CoLLM-style MLP adaptor, phase 2 only.
- ``ilm_rand``: the Q-Former + projection randomly initialised, phase 2 only (ILM-rand, Sec. 4.3).
- ``ilm_it``: phase 1 with item-text contrastive (ITC) + item-grounded text generation (ITG).
- ``ilm_it_ii``: phase 1 with ITC + ITG + item-item contrastive (IIC) on co-consumed pairs (full ILM).
- ``ilm_it_rii``: as ilm_it_ii but the item-item positives are random item pairs (control for IIC).
- ``ilm_shuffled``: as ilm_it_ii but every item is paired with another item's text and random item-item
  positives: the same phase-1 compute with the alignment destroyed (control for pre-alignment).
- ``mlp_lm_unfrozen``: the MLP adaptor with the LM trained too (control of the "language preserved" check).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from papers.item_language_model.catalogue import (ADJECTIVES, GENRES, NOUNS, co_consumed_pairs, hit_and_ndcg,
                                                  load_movielens, make_catalogue, next_item_examples,
                                                  puresvd_item_embeddings, sample_negatives, split_leave_last_out)
from papers.item_language_model.model import (HFTokenizer, ILMEncoder, MLPAdaptor, WordTokenizer,
                                              item_item_contrastive, item_text_contrastive, masked_mean_nll,
                                              pad_right, soft_prefix_logprobs, text_retrieval_at_k)
from shared.lm import causal_lm_loss, tiny_llama
from shared.seeding import seed_everything
from shared.training import TrainConfig, train

ARMS = ["mlp", "ilm_rand", "ilm_it", "ilm_it_ii", "ilm_it_rii", "ilm_shuffled"]
PHASE1 = {  # arm -> (item-item loss, text shuffled, item-item positives random)
    "ilm_it": (False, False, False),
    "ilm_it_ii": (True, False, False),
    "ilm_it_rii": (True, False, True),
    "ilm_shuffled": (True, True, True),
}


def _vocab_words(corpus: list[str] | None = None) -> list[str]:
    """The tiny LM's closed vocabulary: the synthetic catalogue's words, plus every word of ``corpus``
    (real MovieLens titles and genres)."""
    words = list(GENRES) + [w for g in GENRES for w in ADJECTIVES[g] + NOUNS[g]]
    words += ["is", "a", "movie", "movies", ".", ",", ":", "next"]
    return words + [w for text in (corpus or []) for w in text.split()]


def build_lm(cfg: dict[str, Any], corpus: list[str], seed: int, device: str, progress: bool):
    """The frozen LM and its tokenizer. ``tiny``: a Llama of a few hundred k parameters pretrained here
    on the catalogue's item texts (two phrasings per item), then frozen. ``smollm2``: SmolLM2-135M."""
    if cfg["lm"] == "smollm2":
        from shared.lm import load_smollm2

        lm, tok = load_smollm2(device, dtype=torch.float32)
        return lm, HFTokenizer(tok), []
    tok = WordTokenizer(_vocab_words(corpus + [cfg["prompt"]]))
    torch.manual_seed(seed)
    lm = tiny_llama(len(tok.vocab), max_len=128, d_model=cfg["lm_d_model"], n_layers=cfg["lm_layers"],
                    n_heads=4, pad_token_id=tok.pad_id, bos_token_id=tok.bos_id)
    ids, mask = pad_right([[tok.bos_id] + tok.encode(t) for t in corpus], tok.pad_id)
    g = torch.Generator().manual_seed(seed)

    def batch_fn(step):
        idx = torch.randint(0, ids.shape[0], (cfg["lm_batch"],), generator=g)
        return ids[idx].to(device), mask[idx].to(device)

    hist = train(lm, TrainConfig(steps=cfg["lm_steps"], lr=cfg["lm_lr"], warmup_steps=20, desc="pretrain LM",
                                 progress=progress),
                 batch_fn, lambda m, b: causal_lm_loss(m, b[0], b[1].long()), device)
    return lm, tok, hist.records


@torch.no_grad()
def text_nll(lm, tok, texts: list[str], device: str) -> float:
    """Mean per-token NLL (nats) of the LM on ``texts`` (each after BOS): the language-ability probe."""
    ids, mask = pad_right([[tok.bos_id] + tok.encode(" " + t) for t in texts], tok.pad_id)
    return float(causal_lm_loss(lm, ids.to(device), mask.long().to(device)))


@torch.no_grad()
def text_features(lm, tok, texts: list[str], device: str) -> torch.Tensor:
    """Frozen-LM text tower for ITC: mean of the last hidden state over each text's tokens, (N, d_lm)."""
    ids, mask = pad_right([[tok.bos_id] + tok.encode(" " + t) for t in texts], tok.pad_id)
    ids, mask = ids.to(device), mask.to(device)
    h = lm(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True, use_cache=False).hidden_states[-1]
    return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def run_seed(seed: int, cfg: dict[str, Any], device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Everything for one seed; returns per-user tables and per-arm scalars (plain python / numpy)."""
    torch.set_num_threads(1)
    seed_everything(seed)
    if cfg.get("data_source", "synthetic") == "movielens_100k":
        from shared.data import require

        cat = load_movielens(require("movielens_100k", "ml-100k"), cfg["n_users"], cfg["seq_len"])
    else:
        cat = make_catalogue(cfg["n_items"], cfg["n_users"], cfg["seq_len"], cfg["beta"], seed)
    train_seqs, test_items = split_leave_last_out(cat.sequences)
    H = cfg["history"]
    hist_x, next_y = next_item_examples(train_seqs, H)
    cf = torch.tensor(puresvd_item_embeddings(train_seqs, cat.n_items, cfg["d_cf"]), dtype=torch.float32,
                      device=device)
    texts = [cat.item_text(i) for i in range(cat.n_items)]
    corpus = (texts + [cat.genre_first_text(i) for i in range(cat.n_items)]
              + cat.genre_list_texts(cfg["lm_lists"], cfg["lm_list_len"], seed + 5))
    lm, tok, lm_curve = build_lm(cfg, corpus, seed, device, progress)
    lm.requires_grad_(False)
    lm.eval()
    d_lm = lm.get_input_embeddings().weight.shape[1]
    nll_before = text_nll(lm, tok, texts, device)
    feats = text_features(lm, tok, texts, device)

    item_text_ids, item_text_mask = pad_right([tok.encode(" " + t) for t in texts], tok.pad_id)
    prompt = tok.encode(" " + cfg["prompt"])
    title_ids = [tok.encode(" " + t) for t in cat.titles]
    # phase-2 targets: prompt + title, loss on the title tokens only
    tgt_ids, tgt_mask = pad_right([prompt + t for t in title_ids], tok.pad_id)
    tgt_mask[:, :len(prompt)] = 0.0
    item_text_ids, item_text_mask, tgt_ids, tgt_mask = (t.to(device) for t in
                                                        (item_text_ids, item_text_mask, tgt_ids, tgt_mask))
    pairs = torch.tensor(co_consumed_pairs(train_seqs, cfg["ii_window"]), device=device)

    def make_encoder():
        return ILMEncoder(cfg["d_cf"], cfg["d_q"], cfg["n_query"], cfg["n_kv"], cfg["q_layers"], 4, d_lm,
                          feats.shape[1])

    # ---- phase 1: Q-Former pretraining (Sec. 3.2) ------------------------------------------------------
    phase1: dict[str, ILMEncoder] = {}
    retrieval: dict[str, float] = {}
    p1_curves = []
    for arm, (use_ii, shuffle_text, random_ii) in PHASE1.items():
        torch.manual_seed(seed * 1000 + 1)  # same init for every pretrained arm and for ilm_rand
        enc = make_encoder()
        perm = torch.arange(cat.n_items, device=device)
        if shuffle_text:
            perm = torch.randperm(cat.n_items, generator=torch.Generator().manual_seed(seed + 7)).to(device)
        g = torch.Generator().manual_seed(seed * 1000 + 2)  # same batches for every phase-1 arm

        def batch_fn(step, g=g):
            idx = torch.randint(0, pairs.shape[0], (cfg["p1_batch"],), generator=g)
            rnd = torch.randint(0, cat.n_items, (cfg["p1_batch"],), generator=g)
            return pairs[idx.to(device), 0], pairs[idx.to(device), 1], rnd.to(device)

        def loss_fn(enc, b, use_ii=use_ii, random_ii=random_ii, perm=perm):
            a, pos, rnd = b
            q = enc.qformer(cf[a])
            t = perm[a]
            itc = item_text_contrastive(enc, q, feats[t])
            logp = soft_prefix_logprobs(lm, enc.proj(q), item_text_ids[t])
            itg = masked_mean_nll(logp, item_text_mask[t])
            loss, parts = itc + itg, {"itc": float(itc.detach()), "itg": float(itg.detach())}
            if use_ii:
                other = rnd if random_ii else pos
                iic = item_item_contrastive(enc, q, enc.qformer(cf[other]))
                loss = loss + iic
                parts["iic"] = float(iic.detach())
            return loss, parts

        hist = train(enc, TrainConfig(steps=cfg["p1_steps"], lr=cfg["p1_lr"], warmup_steps=20,
                                      desc=f"phase1 {arm} s{seed}", progress=progress), batch_fn, loss_fn, device)
        phase1[arm] = enc
        retrieval[arm] = text_retrieval_at_k(enc, cf, feats, 10)
        p1_curves += [dict(r, arm=arm, seed=seed) for r in hist.records]
    torch.manual_seed(seed * 1000 + 1)
    retrieval["ilm_rand"] = text_retrieval_at_k(make_encoder(), cf, feats, 10)

    # ---- evaluation set: last item of the first n_eval users, negatives never watched -----------------
    users = np.arange(min(cfg["n_eval_users"], cat.n_users))
    negs = sample_negatives(cat.sequences, users, cat.n_items, cfg["n_candidates"] - 1, seed + 11)
    cands = torch.tensor(np.concatenate([test_items[users, None], negs], 1), device=device)  # (U, C)
    eval_hist = torch.tensor(train_seqs[users, -H:], device=device)                           # (U, H)

    @torch.no_grad()
    def score(adaptor, lm_used) -> np.ndarray:
        """(U, C) length-normalised log-likelihood of each candidate's title after the history's soft
        tokens and the prompt."""
        out = []
        C = cands.shape[1]
        for s in range(0, len(users), cfg["eval_chunk"]):
            h = eval_hist[s:s + cfg["eval_chunk"]]
            soft = adaptor.soft_tokens(cf[h.reshape(-1)]).reshape(h.shape[0], -1, d_lm)      # (u, H*Q, d)
            c = cands[s:s + cfg["eval_chunk"]].reshape(-1)
            logp = soft_prefix_logprobs(lm_used, soft.repeat_interleave(C, 0), tgt_ids[c])
            m = tgt_mask[c]
            out.append(((logp * m).sum(1) / m.sum(1)).reshape(h.shape[0], C).cpu().numpy())
        return np.concatenate(out)

    # ---- phase 2: adaptor training with the LM frozen (Sec. 3.3) --------------------------------------
    hist_t, next_t = torch.tensor(hist_x, device=device), torch.tensor(next_y, device=device)
    rows, p2_curves, extra = [], [], {}
    for arm in ARMS + ["mlp_lm_unfrozen"]:
        torch.manual_seed(seed * 1000 + 1)
        if arm.startswith("mlp"):
            adaptor = MLPAdaptor(cfg["d_cf"], cfg["mlp_hidden"], cfg["n_query"], d_lm)
        elif arm == "ilm_rand":
            adaptor = make_encoder()
        else:
            adaptor = copy.deepcopy(phase1[arm])
        lm_used = lm
        model: torch.nn.Module = adaptor
        if arm == "mlp_lm_unfrozen":
            lm_used = copy.deepcopy(lm).requires_grad_(True)
            model = torch.nn.ModuleDict({"adaptor": adaptor, "lm": lm_used})
        g = torch.Generator().manual_seed(seed * 1000 + 3)  # same phase-2 batches for every arm

        def batch_fn(step, g=g):
            idx = torch.randint(0, hist_t.shape[0], (cfg["p2_batch"],), generator=g).to(device)
            return hist_t[idx], next_t[idx]

        def loss_fn(_, b, adaptor=adaptor, lm_used=lm_used):
            h, y = b
            soft = adaptor.soft_tokens(cf[h.reshape(-1)]).reshape(h.shape[0], -1, d_lm)
            return masked_mean_nll(soft_prefix_logprobs(lm_used, soft, tgt_ids[y]), tgt_mask[y])

        params = [p for p in model.parameters() if p.requires_grad]
        curve = train(model, TrainConfig(steps=cfg["p2_steps"], lr=cfg["p2_lr"], warmup_steps=20,
                                         desc=f"phase2 {arm} s{seed}", progress=progress),
                      batch_fn, loss_fn, device, parameters=params)
        lm_used.eval()
        p2_curves += [dict(r, arm=arm, seed=seed) for r in curve.records]
        if arm == "mlp_lm_unfrozen":
            extra["nll_unfrozen"] = text_nll(lm_used, tok, texts, device)
            continue
        hit, ndcg = hit_and_ndcg(score(adaptor, lm), cfg["k"])
        rows += [{"seed": seed, "arm": arm, "user": int(u), "hit": h_, "ndcg": n_} for u, h_, n_ in
                 zip(users, hit, ndcg)]
    extra["nll_after"] = text_nll(lm, tok, texts, device)

    # ---- references: the CF signal alone, and the frozen LM without item tokens ------------------------
    hist_mean = cf[eval_hist].mean(1)                                         # (U, d_cf)
    mf_scores = torch.einsum("ud,ucd->uc", hist_mean, cf[cands]).cpu().numpy()
    hit, ndcg = hit_and_ndcg(mf_scores, cfg["k"])
    rows += [{"seed": seed, "arm": "ref_mf_only", "user": int(u), "hit": h_, "ndcg": n_}
             for u, h_, n_ in zip(users, hit, ndcg)]

    class _NoItems:
        def soft_tokens(self, x):  # one BOS embedding instead of item tokens
            e = lm.get_input_embeddings().weight[tok.bos_id]
            return e.expand(x.shape[0], 1, d_lm) / 1.0

    no_items = score(_NoItems(), lm)[:, :]  # the BOS is repeated H times; the LM still sees no item signal
    hit, ndcg = hit_and_ndcg(no_items, cfg["k"])
    rows += [{"seed": seed, "arm": "ref_text_prior", "user": int(u), "hit": h_, "ndcg": n_}
             for u, h_, n_ in zip(users, hit, ndcg)]

    return {"seed": seed, "rows": rows, "retrieval": retrieval, "nll_before": nll_before,
            "nll_after": extra["nll_after"], "nll_unfrozen": extra["nll_unfrozen"],
            "lm_curve": [dict(r, seed=seed) for r in lm_curve], "p1_curves": p1_curves, "p2_curves": p2_curves,
            "n_items": cat.n_items, "example_titles": [texts[i] for i in range(3)]}
