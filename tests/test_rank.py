"""Ranking: CLIP scoring (a tiny open_clip config with random weights, offline), exemplar kNN
scores, the ranking table, the kept top N, the contact sheet and the image-grid helper; and, on
the shared real images, that Inception exemplar ranking finds Monets among landscape photos."""

from __future__ import annotations

import copy
import os

import numpy as np
import open_clip
import PIL.Image
import pytest
import torch

from lowshot.images.grid import LABEL_PX, image_grid, save_grid
from lowshot.rank import exemplar
from lowshot.rank.clip import ClipScorer, ClipWeightsError, register_tiny_config
from lowshot.rank.exemplar import exemplar_scores
from lowshot.rank.inception_taps import unit_blocks
from lowshot.rank.ranking import TITLE_PX, rank_sheet, rank_table, write_top
from conftest import shared_dataset


def write_images(folder, n: int, size: int = 48, seed: int = 0) -> list:
    """`n` different noise PNGs (each with its own base colour), named img00.png, img01.png, ..."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        base = rng.integers(0, 256, size=3)
        pixels = np.clip(base + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i:02d}.png"
        PIL.Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def scorer() -> ClipScorer:
    torch.manual_seed(0)
    return ClipScorer(register_tiny_config(), None, device="cpu", batch_size=4, workers=0)


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list:
    return write_images(tmp_path_factory.mktemp("images"), 7)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------
# CLIP

def test_tiny_config_registers_once():
    name = register_tiny_config()
    assert register_tiny_config() == name
    assert open_clip.list_models().count(name) == 1


def test_clip_embeddings_are_unit_vectors(scorer, image_paths):
    images = scorer.encode_images(image_paths, progress=False)
    texts = scorer.encode_texts(["monet painting", "a photo of a car", "water lilies"])
    assert images.shape == (7, scorer.dim) and texts.shape == (3, scorer.dim)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert not np.allclose(images[0], images[1])  # different images, different embeddings
    assert scorer.encode_images([], progress=False).shape == (0, scorer.dim)


def test_clip_batches_and_workers_keep_order_and_values(scorer, image_paths):
    reference = scorer.encode_images(image_paths, progress=False)
    other = copy.copy(scorer)
    other.batch_size, other.workers = 3, 2
    np.testing.assert_allclose(other.encode_images(image_paths, progress=False), reference, atol=1e-5)
    reversed_ = scorer.encode_images(image_paths[::-1], progress=False)
    np.testing.assert_allclose(reversed_[::-1], reference, atol=1e-5)


def test_clip_score_is_mean_prompt_similarity_minus_mean_negative(scorer, image_paths):
    prompts, negatives = ["monet painting", "impressionist landscape"], ["a photo", "a diagram", "text"]
    img = scorer.encode_images(image_paths, progress=False)
    expected = (img @ scorer.encode_texts(prompts).T).mean(1) - (img @ scorer.encode_texts(negatives).T).mean(1)
    np.testing.assert_allclose(scorer.score(image_paths, prompts, negatives, progress=False), expected, atol=1e-5)
    # Without negatives, nothing is subtracted.
    expected = (img @ scorer.encode_texts(prompts).T).mean(1)
    np.testing.assert_allclose(scorer.score(image_paths, prompts, progress=False), expected, atol=1e-5)


def test_clip_negative_equal_to_prompt_cancels(scorer, image_paths):
    scores = scorer.score(image_paths, ["monet painting"], ["monet painting"], progress=False)
    np.testing.assert_allclose(scores, 0, atol=1e-6)
    with pytest.raises(ValueError, match="prompt"):
        scorer.score(image_paths, [], progress=False)


def test_clip_features_rank_an_image_first_against_itself(scorer, image_paths):
    # With CLIP features as exemplars, the exemplar image itself must come out on top, score 1.
    feats = scorer.encode_images(image_paths, progress=False)
    table = rank_table(image_paths, exemplar_scores(feats, feats[[4]], top_k=1))
    assert table.loc[0, "id"] == "img04"
    assert table.loc[0, "score"] == pytest.approx(1.0, abs=1e-5)
    assert (table["score"].iloc[1:] < 1 - 1e-4).all()


def test_clip_unreadable_image_is_named(scorer, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        scorer.encode_images([bad], progress=False)


def test_clip_missing_or_bad_checkpoint_is_a_clear_error(tmp_path):
    name = register_tiny_config()
    with pytest.raises(ClipWeightsError, match="rank.pretrained") as err:
        ClipScorer(name, str(tmp_path / "nowhere.pt"), device="cpu")
    assert "rank.features: inception_style" in str(err.value) and "nowhere.pt" in str(err.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ClipWeightsError, match="(?s)garbage.pt.*rank.pretrained"):
        ClipScorer(name, str(garbage), device="cpu")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        ClipScorer("no-such-model", None, device="cpu")


def test_clip_checkpoint_from_a_local_file_loads(scorer, tmp_path, image_paths):
    ckpt = tmp_path / "tiny.pt"
    torch.save(scorer.model.state_dict(), ckpt)
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded = ClipScorer(scorer.model_name, str(ckpt), device="cpu", workers=0)
    np.testing.assert_allclose(
        loaded.encode_images(image_paths, progress=False), scorer.encode_images(image_paths, progress=False), atol=1e-6)


def test_clip_tag_without_network_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(ClipWeightsError, match="could not download.*network is unreachable.*rank.pretrained"):
        ClipScorer("ViT-B-32", "openai", device="cpu")


# --------------------------------------------------------------------------------------------
# Exemplar scores

def test_exemplar_copy_scores_one_with_k1():
    rng = np.random.default_rng(0)
    ex = rng.normal(size=(5, 8))
    corpus = np.concatenate([3.0 * ex[[2]], rng.normal(size=(4, 8))])  # a scaled copy is cosine 1
    scores = exemplar_scores(corpus, ex, top_k=1)
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert (scores[1:] < 0.999).all()


def test_exemplar_score_is_mean_of_top_k_similarities(monkeypatch):
    rng = np.random.default_rng(1)
    corpus, ex = rng.normal(size=(23, 6)), rng.normal(size=(9, 6))
    sims = unit(corpus) @ unit(ex).T
    expected = np.sort(sims, axis=1)[:, -3:].mean(1)
    np.testing.assert_allclose(exemplar_scores(corpus, ex, top_k=3), expected, atol=1e-6)
    monkeypatch.setattr(exemplar, "CHUNK_ROWS", 5)  # several chunks, one ragged
    np.testing.assert_allclose(exemplar_scores(corpus, ex, top_k=3), expected, atol=1e-6)
    # k past the number of exemplars is clipped to all of them.
    np.testing.assert_allclose(exemplar_scores(corpus, ex, top_k=100), sims.mean(1), atol=1e-6)


def test_exemplar_ranking_follows_distance_from_the_exemplars():
    rng = np.random.default_rng(2)
    ex = unit(rng.normal(size=(1, 16)))
    noise = rng.normal(size=(6, 16))
    noise -= (noise @ ex.T) * ex  # orthogonal to the exemplar: similarity falls as t grows
    t = np.array([0.0, 0.1, 0.3, 0.6, 1.0, 2.0])
    corpus = ex + t[:, None] * unit(noise)
    order = rng.permutation(6)
    paths = [f"p/c{i}.png" for i in order]
    table = rank_table(paths, exemplar_scores(corpus[order], ex, top_k=5))
    assert table["id"].tolist() == [f"c{i}" for i in range(6)]


def test_centred_scores_ignore_a_direction_every_feature_shares():
    # Adding one vector to every feature (as a large common component of non-negative Inception
    # features does) changes plain cosines but not the centred ones.
    rng = np.random.default_rng(3)
    corpus, exemplars = rng.normal(size=(30, 8)), rng.normal(size=(5, 8))
    shift = rng.normal(size=8) * 20
    centred = exemplar_scores(corpus, exemplars, top_k=3, center=True)
    assert np.allclose(exemplar_scores(corpus + shift, exemplars + shift, top_k=3, center=True), centred, atol=1e-5)
    assert not np.allclose(exemplar_scores(corpus + shift, exemplars + shift, top_k=3), centred, atol=1e-2)
    mean = corpus.mean(axis=0)
    assert np.allclose(centred, exemplar_scores(corpus - mean, exemplars - mean, top_k=3), atol=1e-6)


def test_unit_blocks_weigh_every_block_equally():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 10))
    blocks = [slice(0, 3), slice(3, 10)]
    out = unit_blocks(x, blocks)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[:, 3:], axis=1), np.sqrt(0.5), atol=1e-6)
    loud = x.copy()
    loud[:, 3:] *= 1000.0  # one block's scale is irrelevant
    np.testing.assert_allclose(unit_blocks(loud, blocks), out, atol=1e-6)
    root = unit_blocks(x, blocks, power=0.5)  # the signed square root, before the scaling
    np.testing.assert_allclose(root, unit_blocks(np.sign(x) * np.sqrt(np.abs(x)), blocks), atol=1e-6)
    with pytest.raises(ValueError):
        unit_blocks(x, [])


def r_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(labels[np.argsort(-scores)[:int(labels.sum())]].mean())


def test_a_quiet_style_block_is_heard_beside_a_loud_content_block():
    """Monet-like images share a direction in a small 'style' block; a wide block with 100x larger values
    varies the same way for everything. Equal block weights let the style block rank them; a plain
    concatenation leaves the ranking to the loud block (about chance)."""
    rng = np.random.default_rng(5)
    style_dir = unit(rng.normal(size=32))

    def images(n: int, monet: bool) -> np.ndarray:
        style = rng.normal(size=(n, 32)) * 0.3 + (2.0 * style_dir if monet else 0.0)
        return np.concatenate([style, 100.0 * rng.normal(size=(n, 64))], axis=1)

    exemplars = images(10, True)
    corpus = np.concatenate([images(20, True), images(60, False)])
    labels = np.r_[np.ones(20), np.zeros(60)]
    blocks = [slice(0, 32), slice(32, 96)]
    balanced = exemplar_scores(unit_blocks(corpus, blocks), unit_blocks(exemplars, blocks), top_k=5, center=True)
    plain = exemplar_scores(corpus, exemplars, top_k=5, center=True)
    assert r_precision(balanced, labels) >= 0.9
    assert r_precision(plain, labels) < 0.6


def test_exemplar_bad_inputs():
    with pytest.raises(ValueError, match="dimensions"):
        exemplar_scores(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="at least one exemplar"):
        exemplar_scores(np.ones((2, 3)), np.ones((0, 3)))
    with pytest.raises(ValueError, match="top_k"):
        exemplar_scores(np.ones((2, 3)), np.ones((2, 3)), top_k=0)


# --------------------------------------------------------------------------------------------
# Ranking table, top N, contact sheet

def test_rank_table_orders_by_score_and_breaks_ties_by_id():
    paths = ["x/c.png", "x/a.png", "x/b.png", "x/d.png", "x/e.png"]
    scores = np.array([0.5, 0.5, 0.9, 0.1, 0.5])
    table = rank_table(paths, scores)
    assert list(table.columns) == ["id", "path", "score", "rank"]
    assert table["id"].tolist() == ["b", "a", "c", "e", "d"]
    assert table["rank"].tolist() == [1, 2, 3, 4, 5]
    perm = [4, 2, 0, 3, 1]
    shuffled = rank_table([paths[i] for i in perm], scores[perm])
    assert shuffled.equals(table)
    with pytest.raises(ValueError, match="not finite.*a.png"):
        rank_table(paths, np.array([0.5, np.nan, 0.9, 0.1, 0.5]))
    with pytest.raises(ValueError, match="scores for 5 images"):
        rank_table(paths, scores[:4])


def test_write_top_copies_the_best_and_replaces_the_folder(tmp_path):
    paths = write_images(tmp_path / "in", 6, size=8)
    out = tmp_path / "top"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    table = rank_table(paths, np.array([0.1, 0.7, 0.3, 0.9, 0.2, 0.5]))
    written = write_top(table, 3, out)
    assert [p.name for p in written] == ["img03.png", "img01.png", "img05.png"]
    assert sorted(os.listdir(out)) == ["img01.png", "img03.png", "img05.png"]
    for p in written:
        assert p.read_bytes() == (tmp_path / "in" / p.name).read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["in", "top"]  # no temporary folders left behind
    assert len(write_top(table, 50, out)) == 6  # more than there are: all of them


def test_rank_sheet_shows_top_and_bottom_in_rank_order(tmp_path):
    n, thumb, pad = 70, 16, 2
    colors = [(3 * i, 255 - 3 * i, (97 * i) % 256) for i in range(n)]
    paths = []
    for i, c in enumerate(colors):
        paths.append(tmp_path / f"s{i:02d}.png")
        PIL.Image.new("RGB", (32, 32), c).save(paths[-1])
    table = rank_table(paths, np.linspace(1, 0, n))  # s00 best, s69 worst
    out = tmp_path / "reports" / "sheet.png"
    rank_sheet(table, out, top=48, bottom=16, thumb=thumb, ncols=8, pad=pad)

    sheet = PIL.Image.open(out).convert("RGB")
    cell = thumb + LABEL_PX
    top_h = TITLE_PX + 6 * cell + 7 * pad  # 48 thumbnails in 8 columns
    bottom_h = TITLE_PX + 2 * cell + 3 * pad  # 16 thumbnails
    assert sheet.size == (8 * thumb + 9 * pad, top_h + bottom_h)

    def centre(y0: int, index: int) -> tuple:
        row, col = divmod(index, 8)
        return sheet.getpixel((pad + col * (thumb + pad) + thumb // 2, y0 + pad + row * (cell + pad) + thumb // 2))

    assert centre(TITLE_PX, 0) == colors[0]  # rank 1
    assert centre(TITLE_PX, 47) == colors[47]  # rank 48
    assert centre(top_h + TITLE_PX, 0) == colors[54]  # rank 55, first of the bottom 16
    assert centre(top_h + TITLE_PX, 15) == colors[69]  # the last
    # Labels are drawn under each thumbnail: the strip holds dark text pixels.
    strip = np.asarray(sheet.crop((pad, TITLE_PX + pad + thumb, pad + thumb, TITLE_PX + pad + cell)))
    assert strip.min() < 100


def test_rank_sheet_sections_do_not_overlap_on_small_sets(tmp_path):
    paths = write_images(tmp_path / "in", 5, size=8)
    sheet = rank_sheet(rank_table(paths, np.arange(5.0)), tmp_path / "s.png", top=3, bottom=16, thumb=8)
    cell = 8 + LABEL_PX
    assert sheet.height == 2 * TITLE_PX + 2 * (cell + 2 * 2)  # top 3 and bottom 2, one row each


# --------------------------------------------------------------------------------------------
# Image grid

def test_image_grid_from_tensor_maps_minus_one_to_black_and_one_to_white(tmp_path):
    x = torch.full((5, 3, 4, 6), -1.0)
    x[1] = 1.0
    x[2, 0] = 0.0
    grid = image_grid(x, ncols=2, pad=1)
    assert grid.size == (2 * 6 + 3, 3 * 4 + 4)
    assert grid.getpixel((1, 1)) == (0, 0, 0)
    assert grid.getpixel((1 + 6 + 1, 1)) == (255, 255, 255)
    assert grid.getpixel((1, 1 + 4 + 1)) == (128, 0, 0)  # 0 -> 127.5, rounded half to even
    assert grid.getpixel((1 + 6 + 1, 1 + 2 * (4 + 1))) == (255, 255, 255)  # empty cell: background

    labelled = save_grid(x, tmp_path / "g.png", ncols=5, labels=[str(i) for i in range(5)])
    assert labelled.size == (5 * 6 + 6 * 2, 4 + LABEL_PX + 2 * 2)
    assert PIL.Image.open(tmp_path / "g.png").size == labelled.size
    assert os.listdir(tmp_path) == ["g.png"]
    with pytest.raises(ValueError, match="one size"):
        image_grid([PIL.Image.new("RGB", (4, 4)), PIL.Image.new("RGB", (5, 4))], ncols=2)
    with pytest.raises(ValueError, match="labels"):
        image_grid(x, ncols=2, labels=["a"])


# --------------------------------------------------------------------------------------------
# Real images: Inception exemplar ranking (rank.method: exemplar, rank.features: inception and inception_style)

@pytest.mark.slow
def test_inception_exemplars_rank_monets_above_photos():
    """On real images: pool3 exemplars find Monets among photos, the style descriptor finds more."""
    from lowshot.images.folder import list_images
    from lowshot.rank.inception_taps import STYLE_TAPS, InceptionTaps

    exemplars = list_images(shared_dataset("monet-train30"))
    monets = list_images(shared_dataset("monet-pool120"))[:40]
    photos = list_images(shared_dataset("landscape-photos"))[:40]
    taps = InceptionTaps(("mixed_7c:mean", *STYLE_TAPS))  # pool3 and the style taps in one pass
    feats = taps.extract(exemplars + monets + photos, batch_size=32, workers=1, progress=False)
    pool3 = feats[:, taps.slices["mixed_7c:mean"]]
    style = unit_blocks(feats, [taps.slices[t] for t in STYLE_TAPS])
    n = len(exemplars)
    monet_ids = {p.stem for p in monets}
    precision = {}
    for name, x, center in (("pool3", pool3, False), ("style", style, True)):
        table = rank_table(monets + photos, exemplar_scores(x[n:], x[:n], top_k=5, center=center))
        precision[name] = table.head(40)["id"].isin(monet_ids).mean()
    print(f"precision@40 of Monets (Inception exemplars, k=5): {precision}")
    assert precision["pool3"] > 0.8
    assert precision["style"] >= 0.9 and precision["style"] > precision["pool3"]


def test_rank_stage_without_paintings_writes_empty_valid_outputs(tmp_path, monkeypatch):
    """The real-Monets-only path: no paintings is a warning, and every output is still written."""
    import pandas as pd

    from lowshot.params import parse_params
    from stages import rank as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/processed/paintings").mkdir(parents=True)
    write_images(tmp_path / "data/ranked/top", 2)  # a previous run's top set must not survive
    # CLIP with weights that cannot exist: nothing may be loaded when there is nothing to rank
    params = parse_params({"rank": {"method": "clip", "pretrained": str(tmp_path / "missing.pt")}})
    summary = stage.run(params, progress=False)
    assert (summary.scored, summary.kept) == (0, 0)
    scores = pd.read_csv(tmp_path / "data/ranked/scores.csv")
    assert list(scores.columns) == ["id", "path", "score", "rank"] and len(scores) == 0
    assert list((tmp_path / "data/ranked/top").iterdir()) == []
    sheet = np.asarray(PIL.Image.open(tmp_path / "reports/rank_sheet.png").convert("L"))
    assert sheet.min() < 100  # it says there was nothing to rank


def test_rank_stage_with_inception_style_features_needs_no_clip(tmp_path, monkeypatch):
    import pandas as pd

    from lowshot.params import parse_params
    from stages import rank as stage

    monkeypatch.chdir(tmp_path)
    exemplars = write_images(tmp_path / "data/processed/monet_train", 2, size=32, seed=1)
    write_images(tmp_path / "data/processed/paintings", 3, size=32, seed=2)
    copy = tmp_path / "data/processed/paintings/copy.png"
    copy.write_bytes(exemplars[1].read_bytes())
    params = parse_params({"device": "cpu", "rank": {"method": "exemplar", "features": "inception_style",
                                                     "pretrained": str(tmp_path / "no-clip-here.pt"),
                                                     "top_n": 2, "workers": 0}})
    summary = stage.run(params, progress=False)
    assert summary.method == "exemplar/inception_style" and (summary.scored, summary.kept) == (4, 2)
    scores = pd.read_csv(tmp_path / "data/ranked/scores.csv")
    assert scores["id"].iloc[0] == "copy" and np.isfinite(scores["score"]).all()
    assert sorted(p.name for p in (tmp_path / "data/ranked/top").iterdir()) == sorted(
        p.rsplit("/", 1)[-1] for p in scores["path"][:2])
