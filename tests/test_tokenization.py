"""Tokenizer kinds, joint and separate vocabularies, the streamed prepare stage and its filters."""

import io
import json
from pathlib import Path

import numpy as np
import pytest

from lmlab.config import Config, ConfigError, TokenizerConfig
from lmlab.data.prepare import prepare
from lmlab.data.rawfiles import iter_lines
from lmlab.data.tokenizer import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    IdsWriter,
    TokenArray,
    TokenizerSet,
    ids_dtype,
    load_tokenizer,
    train_tokenizer,
    write_array,
)

SPLITS = ("train", "validation", "test")
TEXT = ["the cat sat on the mat .", "a dog ran near the cat .", "la chatte est assise .",
        "a dog sat on a mat near the cat ."] * 10
WORLD = ["héllo wörld, ça va ?", "smile 😀 and 🦀 crab", "東京 と 大阪", "naïve café — déjà vu"]


def write_raw(raw: Path, splits: dict[str, dict[str, list[str]]]) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    for split, sides in splits.items():
        for side, lines in sides.items():
            (raw / f"{split}.{side}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return raw


def pairs(src: list[str], tgt: list[str]) -> dict:
    return {split: {"source": src, "target": tgt} for split in SPLITS}


def cfg_with(**tokenizer) -> Config:
    tc = TokenizerConfig(**tokenizer)
    tc.check()
    return Config(tokenizer=tc)


def arrays(prepared: Path) -> dict[str, tuple[list, list]]:
    return {p.name: np.load(p).tolist() for p in sorted(prepared.glob("*.npy"))}


# --- the three kinds ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bpe", "byte_bpe", "char"])
def test_each_kind_round_trips_with_fixed_specials(kind):
    tok = TokenizerSet(train_tokenizer(TEXT, kind, vocab_size=300, min_frequency=1))
    inner, _ = tok.tokenizer("source")
    assert [inner.token_to_id(t) for t in SPECIAL_TOKENS] == [PAD, UNK, BOS, EOS] == [0, 1, 2, 3]
    for line in TEXT[:4] + [""]:
        (ids,) = tok.encode([line], "source")
        assert all(i > EOS for i in ids)  # text never encodes to a special token
        assert tok.decode(ids, "source") == line
    # text that spells a special token is text: never <pad>, <s> or </s>
    (ids,) = tok.encode(["<pad> <s> the </s> <unk>"], "source")
    assert not {PAD, BOS, EOS} & set(ids)


def test_byte_level_bpe_never_unknown_and_exact_on_any_text():
    tok = TokenizerSet(train_tokenizer(TEXT, "byte_bpe", vocab_size=300, min_frequency=1))
    for line in WORLD + ["\x00\x7f tab\there  two  spaces ", "<pad></s>"]:
        (ids,) = tok.encode([line], "source")
        assert min(ids) > EOS and tok.decode(ids, "source") == line


def test_char_vocabulary_is_the_training_characters():
    text = ["abca", "ba c", "é"]
    tok = TokenizerSet(train_tokenizer(text, "char", vocab_size=100, min_frequency=1))
    inner, _ = tok.tokenizer("source")
    assert set(inner.get_vocab()) == set(SPECIAL_TOKENS) | set("abc é")
    assert inner.id_to_token(4) == "a"  # the most frequent character first
    (ids,) = tok.encode(["cab Ωz"], "source")
    assert ids[:4] == [inner.token_to_id(c) for c in "cab "] and ids[4:] == [UNK, UNK]
    assert tok.decode(tok.encode(["é cab"], "source")[0], "source") == "é cab"


# --- one id space ---------------------------------------------------------------------------------

def test_separate_vocabularies_share_one_id_space(tmp_path):
    src = ["zorblax the cat sat .", "the dog ran ."] * 5
    tgt = ["il gatto zitto .", "il cane corre ."] * 5
    raw = write_raw(tmp_path / "raw", pairs(src, tgt))
    stats = prepare(cfg_with(kind="char", joint=False, vocab_size=100, min_frequency=1), raw, tmp_path / "sep")
    tok = load_tokenizer(tmp_path / "sep" / "tokenizer.json")
    assert tok.sides == ["source", "target"]
    n_src, n_tgt = len(set("".join(src))) + 4, len(set("".join(tgt))) + 4
    assert tok.vocab_sizes() == {"source": n_src, "target": n_tgt}
    assert tok.get_vocab_size() == stats["vocab_size"] == n_src + n_tgt - 4
    assert (stats["source_vocab_size"], stats["target_vocab_size"]) == (n_src, n_tgt)
    source_vocab = tok.tokenizer("source")[0].get_vocab()
    target_vocab = tok.tokenizer("target")[0].get_vocab()
    assert "x" in source_vocab and "x" not in target_vocab  # "zorblax" is source-only
    for side, lines in (("source", src), ("target", tgt)):
        arr = TokenArray(tmp_path / "sep" / f"train.{side}")
        ids = np.concatenate([arr[i] for i in range(len(arr))])
        low, high = (4, n_src) if side == "source" else (n_src, n_src + n_tgt - 4)
        assert ids.min() >= low and ids.max() < high  # each side in its own block of the id space
        assert [tok.decode(arr[i], side) for i in range(len(arr))] == lines
    # ids of the other side decode to nothing; the specials are shared
    (x,) = tok.encode(["x"], "source")
    assert tok.decode(x + [EOS], "target") == "" and tok.decode(x, "source") == "x"
    # joint: one vocabulary, the source-only character is in it for both sides
    prepare(cfg_with(kind="char", joint=True, vocab_size=100, min_frequency=1), raw, tmp_path / "joint")
    joint = load_tokenizer(tmp_path / "joint" / "tokenizer.json")
    assert joint.sides is None and joint.get_vocab_size() == len(set("".join(src + tgt))) + 4
    assert joint.encode(["x"], "target") == joint.encode(["x"], "source") == [[joint.tokenizer(None)[0].token_to_id("x")]]


def test_tokenizer_json_round_trips_and_old_files_load(tmp_path):
    plain = train_tokenizer(TEXT, "bpe", vocab_size=120, min_frequency=1)
    old = plain.to_str(pretty=True)  # what prepare wrote before TokenizerSet (Tokenizer.save)
    joint = TokenizerSet.from_json(old)
    assert joint.sides is None and joint.to_json() == old
    assert joint.encode(TEXT[:2], "source") == [e.ids for e in plain.encode_batch(TEXT[:2], add_special_tokens=False)]
    (tmp_path / "old.json").write_text(old)
    assert load_tokenizer(tmp_path / "old.json").to_json() == old
    separate = TokenizerSet({"source": plain, "target": train_tokenizer(WORLD, "byte_bpe", 280, 1)})
    again = load_tokenizer(separate.to_json())
    assert again.sides == ["source", "target"] and again.to_json() == separate.to_json()
    for side, lines in (("source", TEXT[:3]), ("target", WORLD)):
        ids = again.encode(lines, side)
        assert ids == separate.encode(lines, side) and [again.decode(i, side) for i in ids] == lines
    with pytest.raises(ValueError, match="lmlab_tokenizers=2"):
        TokenizerSet.from_json(json.dumps({"lmlab_tokenizers": 2, "sides": {}}))
    with pytest.raises(ValueError, match="no vocabulary for side 'text'"):
        again.encode(["a"], "text")
    with pytest.raises(ValueError, match=r"separate vocabularies \(source, target\): name the side"):
        again.encode(["a"], None)
    # the caller's tokenizer is not changed: its "<pad>" text still maps to the special id
    assert plain.encode("<pad>", add_special_tokens=False).ids == [0]
    assert joint.encode(["<pad>"], None) != [[0]]


def test_model_files_carry_a_separate_vocabulary(tmp_path):
    import dataclasses

    from lmlab.decoding.driver import translate_texts
    from lmlab.model.checkpoint import load_model, save_model
    from lmlab.model.transformer import ModelConfig, Transformer

    tok = TokenizerSet({"source": train_tokenizer(TEXT, "char", 100, 1),
                        "target": train_tokenizer(WORLD, "char", 100, 1)})
    model = Transformer(ModelConfig(vocab_size=tok.get_vocab_size(), n_embd=16, n_head=2, n_encoder_layer=1,
                                    n_decoder_layer=1, d_ff=32, max_len=32))
    cfg = Config()
    save_model(model.cfg.__dict__, model.state_dict(), tok.to_json(), cfg.to_dict(), tmp_path / "model.pt")
    loaded, tokenizer, _ = load_model(tmp_path / "model.pt")
    assert tokenizer.sides == ["source", "target"] and loaded.cfg.vocab_size == tok.get_vocab_size()
    cfg = dataclasses.replace(cfg, decoding=dataclasses.replace(cfg.decoding, max_new_tokens=5))
    (rec,) = translate_texts(loaded, tokenizer, ["the cat ."], cfg)
    assert isinstance(rec["hypothesis"], str) and rec["hyp_tokens"] <= 5
    n_src = tok.vocab_sizes()["source"]
    (src_ids,) = tokenizer.encode(["the cat ."], "source")
    assert all(4 <= i < n_src for i in src_ids)  # the source in its own block of ids
    (tgt_ids,) = tokenizer.encode([WORLD[0]], "target")
    assert min(tgt_ids) >= n_src and tokenizer.decode(tgt_ids, "target") == WORLD[0]


# --- the prepare stage ------------------------------------------------------------------------------

def test_tokenizer_learns_from_the_training_split_only(tmp_path):
    splits = pairs(TEXT, TEXT)
    splits["test"] = {"source": ["the quetzalcoatl sat ."], "target": ["the quetzalcoatl sat ."]}
    raw = write_raw(tmp_path / "raw", splits)
    prepare(cfg_with(vocab_size=200, min_frequency=1), raw, tmp_path / "bpe")
    tok = load_tokenizer(tmp_path / "bpe" / "tokenizer.json")
    inner = tok.tokenizer(None)[0]
    assert "▁quetzalcoatl" not in inner.get_vocab() and "q" not in inner.get_vocab()
    test_ids = TokenArray(tmp_path / "bpe" / "test.source")[0].tolist()
    # q, u and z never occur in training: unknown; the rest of the word is split into known pieces
    assert test_ids.count(UNK) == 3 and len(test_ids) > 8
    assert tok.decode(test_ids, "source") == "the etalcoatl sat ."
    prepare(cfg_with(kind="char", min_frequency=1), raw, tmp_path / "char")
    assert TokenArray(tmp_path / "char" / "test.source")[0].tolist().count(UNK) == 3


def test_filters_drop_exactly_the_expected_pairs_and_count_them(tmp_path):
    # char tokens: a side's length in tokens is its length in characters
    rows = [("abcd", "ab"),       # kept: ratio 2.0 is not above 2
            ("abcdefg", "abc"),   # too long (7 > 6)
            ("a", "ab"),          # too short (1 < 2)
            ("abcde", "ab"),      # ratio 2.5
            ("", "abc"),          # too short (an empty side)
            ("abc", "abcdef"),    # kept: ratio exactly 2, longest 6
            ("abcdefgh", "a")]    # too long first: each pair counts under one filter
    src, tgt = [s for s, _ in rows], [t for _, t in rows]
    raw = write_raw(tmp_path / "raw", pairs(src, tgt))
    stats = prepare(cfg_with(kind="char", min_frequency=1, max_tokens=6, min_tokens=2, max_ratio=2.0),
                    raw, tmp_path / "out")
    tok = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    for split in ("train", "validation"):
        assert stats[split] == {"pairs": 2, "dropped_too_long": 2, "dropped_too_short": 2, "dropped_ratio": 1,
                                "source_tokens": 7, "target_tokens": 8, "source_unk_rate": 0.0,
                                "target_unk_rate": 0.0}
        arr = TokenArray(tmp_path / "out" / f"{split}.source")
        assert [tok.decode(arr[i], "source") for i in range(len(arr))] == ["abcd", "abc"]
    assert stats["test"] == {"pairs": 7, "dropped_too_long": 0, "dropped_too_short": 0, "dropped_ratio": 0,
                             "source_tokens": len("".join(src)), "target_tokens": len("".join(tgt)),
                             "source_unk_rate": 0.0, "target_unk_rate": 0.0}
    # the default filters: max_tokens only, and only its counter in stats.json
    stats = prepare(cfg_with(kind="char", min_frequency=1, max_tokens=6), raw, tmp_path / "default")
    assert stats["train"] == {"pairs": 5, "dropped_too_long": 2, "source_tokens": 13, "target_tokens": 15,
                              "source_unk_rate": 0.0, "target_unk_rate": 0.0}


def test_workers_and_chunks_give_the_same_arrays(tmp_path):
    src = [f"the cat {i} sat on {i % 7} mats ." for i in range(50)] + [""]  # an empty line too
    tgt = [f"il gatto {i} ." for i in range(51)]
    raw = write_raw(tmp_path / "raw", pairs(src, tgt))
    runs = {}
    for name, workers, chunk in (("whole", 0, 1000), ("chunks", 1, 7), ("pool", 2, 3)):
        stats = prepare(cfg_with(vocab_size=150, min_frequency=1, workers=workers, chunk_size=chunk),
                        raw, tmp_path / name)
        runs[name] = (stats, arrays(tmp_path / name), (tmp_path / name / "tokenizer.json").read_text())
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == sorted(
            [f"{s}.{side}.{kind}.npy" for s in SPLITS for side in ("source", "target")
             for kind in ("ids", "offsets")] + ["stats.json", "tokenizer.json"])  # no temporary files left
    assert runs["whole"] == runs["chunks"] == runs["pool"]
    assert runs["whole"][0]["train"]["pairs"] == 51
    empty = TokenArray(tmp_path / "pool" / "train.source")
    assert len(empty) == 51 and len(empty[50]) == 0 and len(empty[49]) > 0


def test_prepare_matches_in_memory_encoding_and_np_save(tmp_path):
    raw = write_raw(tmp_path / "raw", pairs(TEXT, TEXT[::-1]))
    prepare(cfg_with(vocab_size=150, min_frequency=1, chunk_size=5), raw, tmp_path / "out")
    tok = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    expected = tok.encode(TEXT[::-1], "target")
    arr = TokenArray(tmp_path / "out" / "train.target")
    assert [arr[i].tolist() for i in range(len(arr))] == expected
    buf = io.BytesIO()
    np.save(buf, np.array([i for seq in expected for i in seq], dtype=np.uint16))
    assert (tmp_path / "out" / "train.target.ids.npy").read_bytes() == buf.getvalue()


def test_language_modelling_text_split(tmp_path):
    raw = write_raw(tmp_path / "raw", {s: {"text": TEXT[:9] + [""]} for s in SPLITS})
    stats = prepare(cfg_with(kind="byte_bpe", vocab_size=300, min_frequency=1, joint=False), raw, tmp_path / "lm")
    assert sorted(stats["train"]) == ["lines", "text_tokens", "text_unk_rate"] and stats["test"]["lines"] == 10
    tok = load_tokenizer(tmp_path / "lm" / "tokenizer.json")
    assert tok.sides is None  # one side: one vocabulary, whatever joint says
    arr = TokenArray(tmp_path / "lm" / "validation.text")
    assert [tok.decode(arr[i], "text") for i in range(len(arr))] == TEXT[:9] + [""]


def test_prepare_refuses_unequal_or_missing_sides_and_writes_nothing(tmp_path):
    raw = write_raw(tmp_path / "raw", pairs(TEXT[:3], TEXT[:3]))
    (raw / "test.target").write_text("one\ntwo\n")
    with pytest.raises(ValueError, match=r"test\.source has 3 lines but .*test\.target has 2"):
        prepare(cfg_with(vocab_size=100, min_frequency=1, chunk_size=2), raw, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    (raw / "validation.target").unlink()
    with pytest.raises(FileNotFoundError, match=r"validation\.target not found"):
        prepare(cfg_with(vocab_size=100), raw, tmp_path / "out")


def test_iter_lines_reads_what_read_lines_reads(tmp_path):
    path = tmp_path / "x.source"
    path.write_bytes("a\r\nb\rc\n\nd\u2028e\x0cf\ng".encode("utf-8"))
    assert list(iter_lines(path)) == path.read_text(encoding="utf-8").splitlines() == \
        ["a", "b", "c", "", "d", "e", "f", "g"]
    path.write_bytes(b"ok\n\xff\n")
    with pytest.raises(ValueError, match="x.source is not valid UTF-8"):
        list(iter_lines(path))


def test_ids_dtype_switches_at_65536_and_writer_matches_np_save(tmp_path):
    assert ids_dtype(65536) == np.uint16 and ids_dtype(65537) == np.uint32
    for vocab, seqs in ((65536, [[65535, 4], [], [9]]), (70001, [[70000], [5, 6]])):
        write_array(tmp_path / "x", seqs, vocab, chunk_size=2)
        flat = np.array([i for s in seqs for i in s], dtype=ids_dtype(vocab))
        for suffix, arr in ((".ids.npy", flat), (".offsets.npy", np.array([0, *np.cumsum([len(s) for s in seqs])]))):
            buf = io.BytesIO()
            np.save(buf, arr)
            assert (tmp_path / f"x{suffix}").read_bytes() == buf.getvalue()
    with IdsWriter(tmp_path / "y.ids", tmp_path / "y.offsets", 100) as writer:
        writer.append(np.array([5]), np.array([1]))
    assert not list(tmp_path.glob("y.*"))  # an unfinished writer leaves nothing


@pytest.mark.parametrize("changes, message", [
    (dict(kind="wordpiece"), "tokenizer.kind='wordpiece' must be one of bpe, byte_bpe, char"),
    (dict(kind="byte_bpe", vocab_size=200), "tokenizer.vocab_size=200 must be >= 260 with tokenizer.kind=byte_bpe"),
    (dict(min_tokens=200), "tokenizer.min_tokens=200 must be <= tokenizer.max_tokens=128"),
    (dict(max_ratio=0.5), "tokenizer.max_ratio=0.5 must be >= 1 or null"),
    (dict(workers=-1), "tokenizer.workers=-1 must be >= 0"),
    (dict(chunk_size=0), "tokenizer.chunk_size=0 must be >= 1"),
    (dict(max_tokens=0), "tokenizer.max_tokens=0 must be >= 1 or null"),
])
def test_bad_tokenizer_settings_name_the_key(changes, message):
    with pytest.raises(ConfigError) as err:
        TokenizerConfig(**changes).check()
    assert message in str(err.value)


def test_tokenize_scale_bench_ends_in_its_json(capsys, tmp_path):
    import tokenize_scale as ts
    record = ts.main(["--scales", "1,2", "--n-train", "40", "--repeats", "1", "--threads", "1",
                      "--record", str(tmp_path / "t.json")])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == record and last["throughput_ratio"] > 0 and last["mem_growth"] > 0
    assert last["x2_tokens"] > last["x1_tokens"] > 0 and last["x1_peak_mib"] > 0
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["summary"] == record  # and every child run: 2 scales × 2 sides × 1 repeat
    assert sorted((r["scale"], r["side"]) for r in saved["runs"]) == [(1, "lmlab"), (1, "raw"), (2, "lmlab"), (2, "raw")]
