import numpy as np
import pytest

from lmlab.data.batching import (
    BucketBatchSampler,
    PairDataset,
    TextDataset,
    collate_blocks,
    collate_lm_pairs,
    collate_pairs,
    pad_batch,
)
from lmlab.data.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, TokenArray, decode, encode_lines, train_bpe, write_array
from lmlab.train.data import TokenDataModule

TEXT = ["the cat sat on the mat .", "a dog ran near the cat .", "la chatte est assise ."] * 20


def test_bpe_roundtrip_and_special_ids():
    tok = train_bpe(TEXT, vocab_size=80, min_frequency=1)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    for line in TEXT[:3]:
        (ids,) = list(encode_lines(tok, [line]))
        assert min(ids) > EOS  # specials never appear in encoded text
        assert decode(tok, ids) == line


def test_token_arrays_roundtrip(tmp_path):
    seqs = [[5, 6, 7], [], [9] * 40, [65000, 4]]
    assert write_array(tmp_path / "x.source", seqs, vocab_size=65536) == 4
    arr = TokenArray(tmp_path / "x.source")
    assert arr.ids.dtype == np.uint16 and len(arr) == 4
    assert [arr[i].tolist() for i in range(4)] == seqs
    write_array(tmp_path / "y.source", [[70000]], vocab_size=70001)
    assert TokenArray(tmp_path / "y.source").ids.dtype == np.uint32


def test_missing_array_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.source\.ids\.npy not found: run the prepare stage"):
        TokenArray(tmp_path / "nope.source")


def test_collate_teacher_forcing_layout():
    src, src_pad, tgt_in, tgt_out = collate_pairs([(np.array([7, 8, EOS]), np.array([9])),
                                                   (np.array([7, EOS]), np.array([10, 11]))])
    assert src.tolist() == [[7, 8, EOS], [7, EOS, PAD]]
    assert src_pad.tolist() == [[False, False, False], [False, False, True]]
    assert tgt_in.tolist() == [[BOS, 9, PAD], [BOS, 10, 11]]
    assert tgt_out.tolist() == [[9, EOS, PAD], [10, 11, EOS]]
    ids, mask = pad_batch([[1, 2], [3]])
    assert ids.tolist() == [[1, 2], [3, 0]] and mask.tolist() == [[False, False], [False, True]]


def test_bucket_sampler_covers_every_example_once_and_groups_lengths():
    lengths = np.random.default_rng(0).integers(1, 50, size=1000)
    sampler = BucketBatchSampler(lengths, batch_size=16, seed=3)
    first = list(sampler)
    flat = sorted(i for b in first for i in b)
    assert flat == list(range(1000)) and len(first) == len(sampler)
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in first])
    assert spread < 3  # random batches of 16 would spread over ~45
    second = list(sampler)
    assert first != second  # a new order each epoch ...
    again = BucketBatchSampler(lengths, batch_size=16, seed=3)
    assert list(again) == first  # ... and the same order for the same seed


def test_bucket_sampler_shards_batches_across_ranks():
    lengths = np.arange(100) % 7
    shards = [list(BucketBatchSampler(lengths, 10, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen)) == 100 and len(shards[0]) == len(shards[1]) == 5


def test_pair_dataset_appends_eos_and_truncates(tmp_path):
    write_array(tmp_path / "train.source", [[5, 6, 7, 8]], 100)
    write_array(tmp_path / "train.target", [[9]], 100)
    ds = PairDataset(tmp_path, "train", max_source_len=3)
    src, tgt = ds[0]
    assert src.tolist() == [5, 6, EOS] and tgt.tolist() == [9]


def test_evaluation_sampler_keeps_every_batch_across_ranks():
    lengths = np.arange(105) % 9  # 11 batches of 10: uneven over two ranks
    shards = [BucketBatchSampler(lengths, 10, seed=1, shuffle=False, rank=r, world_size=2) for r in (0, 1)]
    seen = sorted(i for s in shards for b in s for i in b)
    assert seen == list(range(105))
    assert [len(s) for s in shards] == [6, 5] == [len(list(s)) for s in shards]


def test_collate_decoder_only_layout_scores_the_target_only():
    ids, labels = collate_lm_pairs([(np.array([7, 8, EOS]), np.array([9])),
                                    (np.array([7, EOS]), np.array([10, 11]))], max_len=10)
    assert ids.tolist() == [[7, 8, EOS, BOS, 9], [7, EOS, BOS, 10, 11]]
    assert labels.tolist() == [[PAD, PAD, PAD, 9, EOS], [PAD, PAD, 10, 11, EOS]]
    ids, labels = collate_lm_pairs([(np.array([7, 8, EOS]), np.array([9, 10, 11]))], max_len=5)
    assert ids.tolist() == [[7, 8, EOS, BOS, 9]] and labels.tolist() == [[PAD, PAD, PAD, 9, 10]]


def test_token_budget_batches_fit_the_budget_and_cover_every_example():
    lengths = np.random.default_rng(0).integers(1, 60, size=2000)
    sampler = BucketBatchSampler(lengths, batch_size=None, seed=3, max_tokens=300)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(2000))
    padded = [len(b) * lengths[b].max() for b in batches]
    assert max(padded) <= 300 and np.mean(padded) > 0.9 * 300  # full, never over
    assert len({len(b) for b in batches}) > 5  # short sentences make big batches
    capped = list(BucketBatchSampler(lengths, batch_size=8, seed=3, max_tokens=300))
    assert max(len(b) for b in capped) == 8
    with pytest.raises(TypeError):
        len(sampler)  # epochs differ in batch count: Lightning must run each to exhaustion
    with pytest.raises(ValueError, match="trainer.max_tokens=40 is smaller than the longest example"):
        BucketBatchSampler(lengths, None, seed=3, max_tokens=40)


@pytest.mark.parametrize("kw", [dict(batch_size=16), dict(batch_size=None, max_tokens=200)])
def test_sampler_started_at_batch_k_replays_the_rest_of_the_run(kw):
    """What resume relies on: a sampler built with start_batch=k yields exactly the batches an
    uninterrupted sampler yields after its first k, across epoch boundaries."""
    lengths = np.random.default_rng(1).integers(1, 30, size=300)
    full = BucketBatchSampler(lengths, seed=5, rank=1, world_size=2, **kw)
    stream = [b for _ in range(3) for b in full]  # three epochs
    epoch0 = len(stream) // 3
    for k in (0, 5, epoch0, epoch0 + 3):
        resumed = BucketBatchSampler(lengths, seed=5, rank=1, world_size=2, start_batch=k, **kw)
        replay = [b for _ in range(3) for b in resumed]
        assert replay[: len(stream) - k - 5] == stream[k:len(stream) - 5], k


def test_text_dataset_reads_the_lines_as_one_stream_in_blocks(tmp_path):
    write_array(tmp_path / "test.text", [[5, 6], [7], [8, 9, 10]], vocab_size=100)
    # stream 5 6 EOS 7 EOS 8 9 10 EOS (9 tokens): blocks of 2 + 1 overlap by one token
    data = TextDataset(tmp_path, "test", 2)
    assert [data[i].tolist() for i in range(len(data))] == [[5, 6, EOS], [EOS, 7, EOS], [EOS, 8, 9], [9, 10, EOS]]
    assert data.lengths().tolist() == [2, 2, 2, 2]
    ids, labels = collate_blocks([data[0], data[1]])
    assert ids.tolist() == [[5, 6], [EOS, 7]] and labels.tolist() == [[6, EOS], [7, EOS]]
    assert len(TextDataset(tmp_path, "test", 3)) == 2  # (9 - 1) // 3: the short tail is left out
    assert len(TextDataset(tmp_path, "test", 8)) == 1
    with pytest.raises(ValueError, match="holds 9 tokens: fewer than one block of trainer.block_size=9"):
        TextDataset(tmp_path, "test", 9)


def test_text_dataset_with_a_stride_starts_a_block_every_stride_tokens(tmp_path):
    write_array(tmp_path / "test.text", [[5, 6], [], [7, 8]], vocab_size=100)
    # stream 5 6 EOS EOS 7 8 EOS (7 tokens; the empty line is a lone EOS)
    every = TextDataset(tmp_path, "test", 2, stride=1)
    assert [every[i].tolist() for i in range(len(every))] == [
        [5, 6, EOS], [6, EOS, EOS], [EOS, EOS, 7], [EOS, 7, 8], [7, 8, EOS]]
    assert every.lengths().tolist() == [2] * 5
    third = TextDataset(tmp_path, "test", 3, stride=2)
    assert [third[i].tolist() for i in range(len(third))] == [[5, 6, EOS, EOS], [EOS, EOS, 7, 8]]
    assert len(TextDataset(tmp_path, "test", 2, stride=2)) == len(TextDataset(tmp_path, "test", 2)) == 3
    with pytest.raises(ValueError, match=r"^trainer.block_stride=3 must be in \[1, trainer.block_size=2\]$"):
        TextDataset(tmp_path, "test", 2, stride=3)


def test_only_the_training_blocks_take_the_stride(tmp_path):
    for split in ("train", "validation"):
        write_array(tmp_path / f"{split}.text", [[5, 6, 7, 8, 9]], vocab_size=100)
    data = TokenDataModule(tmp_path, 2, seed=0, max_len=4, decoder_only=True, block=2, stride=1)
    data.setup()
    assert (len(data.train_set), len(data.val_set)) == (4, 2)  # 6 tokens: blocks at 0..3, and at 0, 2
