"""Starting from a Hugging Face model (``init_from`` a ``save_pretrained`` folder): a random
``GPT2LMHeadModel`` and ``BertForMaskedLM``, saved here with a tokenizer trained on lmlab's own
corpus (no hub), load tensor for tensor with logits equal to Hugging Face's, tokenize as their fast
tokenizer does, and fine-tune through lmlab's prepare and train stages."""

import json

import pytest
import torch
import yaml

import train as train_stage
from lmlab.config import build_config, compose
from lmlab.data.download import download
from lmlab.data.prepare import prepare
from lmlab.data.rawfiles import raw_path
from lmlab.data.tokenizer import EOS, PAD, TokenizerSet, tokenizer_hash
from lmlab.model.checkpoint import load_model
from lmlab.model.transformer import ModelConfig, Transformer
from lmlab.model.warmstart import InitError, read_init, warm_start
from lmlab.train.fit import train

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

EOT = "<|endoftext|>"
BERT_SPECIALS = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BERT's order, [unused] between
# the model overrides that make lmlab's presets the shapes of the saved models below
GPT2_MODEL = ["model=gpt-tiny", "model.n_embd=32", "model.n_head=4", "model.n_encoder_layer=0", "model.n_decoder_layer=2",
              "model.d_ff=128", "model.max_len=192"]
BERT_MODEL = ["model=bert-tiny", "model.n_embd=32", "model.n_head=4", "model.n_encoder_layer=2", "model.n_decoder_layer=0",
              "model.d_ff=64", "model.max_len=64", "trainer.block_size=64"]


def perturbed(model):
    """Every tensor moved off its initial value (LayerNorms away from 1 and 0, biases non-zero), so
    a tensor mapped to the wrong place changes the logits."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def lines(raw, split, side, n=2000):
    return raw_path(raw, split, side).read_text(encoding="utf-8").splitlines()[:n]


@pytest.fixture(scope="module")
def gpt2_dir(prepared, tmp_path_factory):
    """A GPT-2 folder: byte-level BPE trained on the tiny corpus's training pairs with end-of-text
    as its last id (as GPT-2's 50256), and a 2-layer model."""
    raw = prepared / "raw"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines(raw, "train", "source") + lines(raw, "train", "target"),
                            trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([EOT])
    path = tmp_path_factory.mktemp("hf") / "gpt2"
    transformers.GPT2TokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT).save_pretrained(path)
    eot = tok.token_to_id(EOT)
    assert eot == tok.get_vocab_size() - 1
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=192, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=eot, eos_token_id=eot)
    perturbed(transformers.GPT2LMHeadModel(config)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tiny_overrides, tmp_path_factory):
    """A BERT folder: WordPiece with BERT's normaliser, pre-tokenizer and special tokens (not at
    lmlab's ids) trained on the built-in language-modelling text, and a 2-layer model. Returns
    (folder, the raw text's folder)."""
    root = tmp_path_factory.mktemp("hf")
    raw = root / "raw"
    download(build_config(compose([*tiny_overrides, "data=lm_text", *BERT_MODEL])), raw)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(lines(raw, "train", "text"), trainers.WordPieceTrainer(
        vocab_size=500, special_tokens=BERT_SPECIALS, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    path = root / "bert"
    transformers.BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                   cls_token="[CLS]", mask_token="[MASK]").save_pretrained(path)
    config = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    perturbed(transformers.BertForMaskedLM(config)).save_pretrained(path)
    return path, raw


def imported(path):
    """(lmlab model with every tensor loaded, Hugging Face model, lmlab id of each HF id, payload)."""
    weights, model_config, _, payload = read_init(path)
    model = Transformer(ModelConfig(**model_config)).eval()
    report = warm_start(model, weights, str(path))
    hf = transformers.AutoModelForMaskedLM if model.encoder_only else transformers.AutoModelForCausalLM
    to_lmlab = {h: i for i, h in enumerate(payload["hf_ids"]) if h is not None}
    return model, hf.from_pretrained(path).eval(), to_lmlab, report, payload


def compare_logits(ours, theirs, to_lmlab):
    """lmlab's logit of each HF id at the id it was given, against HF's."""
    hf_ids = sorted(to_lmlab)
    assert hf_ids == list(range(theirs.size(-1)))  # every HF id has its place, once
    torch.testing.assert_close(ours[..., [to_lmlab[h] for h in hf_ids]], theirs, atol=1e-5, rtol=1e-5)


def test_gpt2_imports_with_equal_logits(gpt2_dir):
    model, hf, to_lmlab, report, payload = imported(gpt2_dir)
    assert report.new == [] and report.dropped == [] and len(report.loaded) == len(model.state_dict())
    eot = hf.config.eos_token_id
    # end of text is lmlab's </s>; <pad>, <unk> and <s> have no GPT-2 token: new rows
    assert payload["hf_ids"][:4] == [None, None, None, eot] and to_lmlab[eot] == EOS
    assert torch.equal(model.embed.weight[PAD], torch.zeros(32))
    torch.testing.assert_close(model.embed.weight[1], hf.transformer.wte.weight.mean(0))
    ids = torch.randint(0, hf.config.vocab_size, (4, 40), generator=torch.Generator().manual_seed(0))
    ids[:, 17] = eot
    with torch.inference_mode():
        ours = model.lm(torch.tensor([[to_lmlab[int(h)] for h in row] for row in ids]))
        compare_logits(ours, hf(ids).logits, to_lmlab)


def test_bert_imports_with_equal_logits_on_padded_rows(bert_dir):
    path, _ = bert_dir
    model, hf, to_lmlab, report, payload = imported(path)
    assert report.new == [] and report.dropped == []
    vocab = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
    # [PAD] [UNK] [CLS] [SEP] take lmlab's 0-3, [unused0] follows in its order, [MASK] is the last id
    assert payload["hf_ids"][:5] == [vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[unused0]")]
    assert payload["hf_ids"][-1] == vocab["[MASK]"] and model.mask_id == to_lmlab[vocab["[MASK]"]]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, hf.config.vocab_size, (3, 30), generator=g)
    ids[:, 0], ids[:, 5], ids[2, 9] = vocab["[CLS]"], vocab["[MASK]"], vocab["[SEP]"]
    attention = torch.ones_like(ids)
    attention[1, 20:] = attention[2, 10:] = 0
    ids[attention == 0] = vocab["[PAD]"]
    with torch.inference_mode():
        lm_ids = torch.tensor([[to_lmlab[int(h)] for h in row] for row in ids])
        ours, theirs = model.mlm(lm_ids, lm_ids.eq(PAD)), hf(ids, attention_mask=attention).logits
        real = attention.bool()
        compare_logits(ours[real], theirs[real], to_lmlab)


@pytest.mark.parametrize("which", ["gpt2", "bert"])
def test_the_imported_tokenizer_gives_hugging_faces_tokens(which, gpt2_dir, bert_dir, prepared):
    path, texts = ((gpt2_dir, lines(prepared / "raw", "test", "source", 50)) if which == "gpt2"
                   else (bert_dir[0], lines(bert_dir[1], "test", "text", 50)))
    _, _, tokenizer_json, payload = read_init(path)
    ours = TokenizerSet.from_json(tokenizer_json)
    theirs = transformers.AutoTokenizer.from_pretrained(path)
    to_lmlab = {h: i for i, h in enumerate(payload["hf_ids"]) if h is not None}
    for text in texts + ["an unseen word: zyxq!"]:
        hf_ids = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours.encode([text], None)[0] == [to_lmlab[h] for h in hf_ids]
        assert ours.decode([to_lmlab[h] for h in hf_ids], None) == theirs.decode(hf_ids, skip_special_tokens=True)
    assert ours.get_vocab_size() == len(payload["hf_ids"]) - (which == "bert")  # <mask> is the model's, not the tokenizer's


def fine_tune(cfg, raw, root):
    prepare(cfg, raw, root / "prepared")
    summary = train(cfg, root / "prepared", root / "model", root / "curves")
    model, tokenizer, payload = load_model(root / "model/model.pt")
    rows = (root / "curves/train_loss.tsv").read_text().splitlines()[1:]
    losses = [float(r.split("\t")[1]) for r in rows]
    return summary, model, losses


def test_gpt2_fine_tunes_on_translation(gpt2_dir, prepared, tiny_overrides, tmp_path):
    cfg = build_config(compose([*tiny_overrides, *GPT2_MODEL, f"init_from={gpt2_dir}", "ckpt_path=null",
                                "trainer.max_steps=8", "trainer.val_check_interval=4"]))
    summary, model, losses = fine_tune(cfg, prepared / "raw", tmp_path)
    assert summary["init"]["new"] == [] and summary["init"]["dropped"] == []
    assert losses[-1] < losses[0] - 0.2, losses  # it learns
    _, _, tokenizer_json, _ = read_init(gpt2_dir)
    assert tokenizer_hash(tokenizer_json) == json.loads((tmp_path / "prepared/stats.json").read_text())["tokenizer_sha256"]
    assert isinstance(model, Transformer) and model.cfg.vocab_size == 401 + 3  # a plain lmlab model file


def test_bert_fine_tunes_with_masked_language_modelling(bert_dir, tiny_overrides, tmp_path):
    path, raw = bert_dir
    cfg = build_config(compose([*tiny_overrides, "data=lm_text", *BERT_MODEL, f"init_from={path}", "ckpt_path=null",
                                "trainer.max_steps=8", "trainer.val_check_interval=4", "trainer.lr=0.01"]))
    summary, model, losses = fine_tune(cfg, raw, tmp_path)
    assert summary["init"]["new"] == [] and summary["init"]["dropped"] == []
    assert losses[-1] < losses[0] - 0.2, losses  # it learns
    assert model.encoder_only and model.cfg.embed_norm and model.cfg.norm_eps == 1e-12


def test_a_setting_the_checkpoint_was_not_built_with_is_refused(bert_dir, tiny_overrides, tmp_path, capsys):
    path, raw = bert_dir
    params = tmp_path / "params.yaml"  # the DVC door (the Hydra door would take over this process's output)
    raw_cfg = compose([*tiny_overrides, "data=lm_text", *BERT_MODEL, "model.embed_norm=false", f"init_from={path}"])
    params.write_text(yaml.safe_dump(raw_cfg, sort_keys=False))
    prepare(build_config(raw_cfg), raw, tmp_path / "prepared")
    status = train_stage.main(["--params", str(params), "--prepared-dir", str(tmp_path / "prepared"),
                               "--out-dir", str(tmp_path / "run/model"), "--curves-dir", str(tmp_path / "run/curves"),
                               "--ckpt-dir", str(tmp_path / "run/ckpt")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and not (tmp_path / "run").exists()
    assert f"model.embed_norm=False but init_from='{path}' was built with model.embed_norm=True" in err, err


@pytest.mark.parametrize("edit, message", [
    (lambda p: (p / "tokenizer.json").unlink(), "has no tokenizer.json: save the model's fast tokenizer there"),
    (lambda p: (p / "model.safetensors").unlink(), "has config.json but no weights (model.safetensors or pytorch_model.bin)"),
    (lambda p: _edit_config(p, model_type="llama"), "holds a Hugging Face 'llama' model: lmlab imports gpt2"),
    (lambda p: _edit_config(p, position_embedding_type="relative_key"),
     "config.json has position_embedding_type='relative_key', which lmlab's blocks do not compute"),
])
def test_a_folder_lmlab_cannot_import_is_one_line(edit, message, bert_dir, tmp_path):
    import shutil

    path = tmp_path / "bert"
    shutil.copytree(bert_dir[0], path)
    edit(path)
    with pytest.raises(InitError) as err:
        read_init(path)
    assert str(err.value).startswith(f"init_from={str(path)!r}") and message in str(err.value)
    assert "\n" not in str(err.value)


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | changes))


def test_the_init_stage_hashes_the_whole_folder(gpt2_dir, tmp_path):
    import shutil

    from lmlab.model.warmstart import record_init

    copy = tmp_path / "copy"
    shutil.copytree(gpt2_dir, copy)
    first, same = record_init(str(gpt2_dir), tmp_path / "a"), record_init(str(copy), tmp_path / "b")
    assert first["sha256"] == same["sha256"] and first["bytes"] == sum(f.stat().st_size for f in gpt2_dir.iterdir())
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text() + " ")
    assert record_init(str(copy), tmp_path / "c")["sha256"] != first["sha256"]  # any file's bytes count
