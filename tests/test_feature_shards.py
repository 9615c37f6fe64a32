"""The sharded feature cache (xlingual/features.py): same features as one extraction, bounded maps, old layout read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import write_tiny_corpus
from xlingual.audio import load_audio
from xlingual.config import FeatureConfig
from xlingual.corpus import read_manifest
from xlingual.features import INDEX_FILE, FeatureStore, LogMel, cache_key, compute_features

FEATS = FeatureConfig(n_mels=40)


@pytest.fixture(scope="module")
def utts(tmp_path_factory):
    corpus = write_tiny_corpus(tmp_path_factory.mktemp("corpus"), languages=("bn",))
    return [u for s in ("train", "dev", "test") for u in read_manifest(f"{corpus.dir}/bn/{s}.jsonl")]


@pytest.mark.parametrize("shard_mb, max_open", [(64, 2), (0.02, 1), (0.02, 3)])
def test_shards_hold_exactly_what_one_extraction_gives(utts, tmp_path, shard_mb, max_open):
    store = compute_features(utts, tmp_path, FEATS, progress=False, shard_mb=shard_mb)
    store = FeatureStore(store.folder, max_open=max_open)
    index = json.loads((store.folder / INDEX_FILE).read_text())
    assert store.folder.name == cache_key(utts, FEATS)
    expected_shards = 1 if shard_mb == 64 else 2  # ~0.9 s utterances at 40 mels: 14 KB each, 20 KB per shard
    assert len(index["shards"]) >= expected_shards
    extract = LogMel(FEATS)
    for u in reversed(utts):  # out of order: shards are mapped and released as needed
        ref = extract(load_audio(u.audio))
        assert torch.equal(store[u.id], ref) and store.num_frames(u.id) == ref.shape[0]
        assert len(store._maps) <= max_open
    assert store.nbytes == sum(store.num_frames(u.id) for u in utts) * FEATS.n_mels * 4
    assert len(store) == len(utts) and utts[0].id in store and "nope" not in store
    # a second call finds the cache: nothing is rewritten
    before = {p.name: p.stat().st_mtime_ns for p in store.folder.iterdir()}
    again = compute_features(utts, tmp_path, FEATS, progress=False, shard_mb=shard_mb)
    assert {p.name: p.stat().st_mtime_ns for p in again.folder.iterdir()} == before


def test_single_file_layout_of_older_caches_is_read(utts, tmp_path):
    """A cache written before sharding (feats.npy + index.json) under the same key is reused, not recomputed."""
    extract = LogMel(FEATS)
    folder = tmp_path / cache_key(utts, FEATS)
    folder.mkdir()
    chunks, index, start = [], {}, 0
    for u in utts:
        f = extract(load_audio(u.audio)).numpy()
        chunks.append(f)
        index[u.id] = [start, f.shape[0]]
        start += f.shape[0]
    np.save(folder / "feats.npy", np.concatenate(chunks))
    (folder / "index.json").write_text(json.dumps({"n_mels": FEATS.n_mels, "utts": index}))
    store = compute_features(utts, tmp_path, FEATS, progress=False)
    assert not (folder / INDEX_FILE).exists()  # found, not recomputed
    for u, c in zip(utts, chunks):
        assert np.array_equal(store[u.id].numpy(), c)


def test_empty_utterance_list_gives_an_empty_store(tmp_path):
    store = compute_features([], tmp_path, FEATS, progress=False)
    assert len(store) == 0 and store.nbytes == 0
