"""Metric math against straightforward reference computations (express4d_hf.evaluation.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from express4d_hf.evaluation.metrics import (
    FrechetDistanceError,
    default_diversity_pairs,
    diversity,
    embedding_metrics,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    matching_score,
    multimodality,
    r_precision,
)


# --- references written the obvious way ------------------------------------------------------------------
def reference_r_precision(text, motion, top_k, group_size):
    """The official algorithm: argsort each row of each group's distance matrix, look for the diagonal."""
    hits, count = np.zeros(top_k), 0
    for start in range(0, len(text) - group_size + 1, group_size):
        t, m = text[start : start + group_size], motion[start : start + group_size]
        for i in range(group_size):
            dists = [np.sqrt(((t[i] - m[j]) ** 2).sum()) for j in range(group_size)]
            rank = list(np.argsort(dists)).index(i)
            hits += [rank < k for k in range(1, top_k + 1)]
            count += 1
    return hits / count


def reference_trace_sqrt(sigma1, sigma2):
    """tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), computed with symmetric eigendecompositions."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    return np.sqrt(np.clip(inner, 0, None)).sum()


def reference_fid(mu1, sigma1, mu2, sigma2):
    return ((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * reference_trace_sqrt(sigma1, sigma2)


def random_spd(rng, dims):
    a = rng.normal(size=(dims, dims))
    return a @ a.T / dims + 0.1 * np.eye(dims)


# --- R-precision and matching score ----------------------------------------------------------------------
def test_r_precision_perfectly_aligned_is_one():
    emb = np.random.default_rng(0).normal(size=(96, 32))
    np.testing.assert_array_equal(r_precision(emb, emb.copy()), [1.0, 1.0, 1.0])


def test_r_precision_of_unrelated_embeddings_is_chance():
    rng = np.random.default_rng(1)
    text, motion = rng.normal(size=(32 * 300, 16)), rng.normal(size=(32 * 300, 16))
    # 9600 Bernoulli trials: std of the mean <= 0.003, so 0.012 is a 4-sigma tolerance.
    np.testing.assert_allclose(r_precision(text, motion), [1 / 32, 2 / 32, 3 / 32], atol=0.012)


def test_r_precision_matches_the_official_argsort_algorithm():
    rng = np.random.default_rng(2)
    text = rng.normal(size=(100, 8))
    motion = text + rng.normal(scale=1.2, size=text.shape)  # partly aligned: values strictly between 0 and 1
    ours = r_precision(text, motion, top_k=5, group_size=32)
    np.testing.assert_allclose(ours, reference_r_precision(text, motion, 5, 32))
    assert 0.1 < ours[0] < ours[-1] < 1.0


def test_r_precision_uses_consecutive_groups_and_drops_the_remainder():
    emb = np.eye(40)
    motion = emb.copy()
    motion[32:] = 0.0  # the 8 remainder rows are wrong, but they are dropped
    np.testing.assert_array_equal(r_precision(emb, motion), [1.0, 1.0, 1.0])
    # Swapping two motions across a group boundary breaks exactly those two texts: their own motion
    # is now in the other group, so all 32 candidates are equally far (one-hot) -> chance 1/32 each.
    swapped = np.eye(64)[np.r_[0:31, 32, 31, 33:64]]
    assert r_precision(np.eye(64), swapped)[0] == pytest.approx((62 + 2 / 32) / 64)


def test_r_precision_ties_count_as_random_tie_breaks():
    text = np.random.default_rng(3).normal(size=(64, 4))
    constant = np.zeros((64, 4))  # a generator that outputs one motion for every text
    np.testing.assert_allclose(r_precision(text, constant, top_k=3), [1 / 32, 2 / 32, 3 / 32])


def test_r_precision_errors_are_clear():
    with pytest.raises(ValueError, match="at least one full group of 32"):
        r_precision(np.zeros((31, 4)), np.zeros((31, 4)))
    with pytest.raises(ValueError, match="same shape"):
        r_precision(np.zeros((32, 4)), np.zeros((32, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        r_precision(np.full((32, 4), np.nan), np.zeros((32, 4)))


def test_matching_score_is_mean_pair_distance_over_full_groups():
    rng = np.random.default_rng(4)
    text, motion = rng.normal(size=(70, 6)), rng.normal(size=(70, 6))
    expected = np.mean([np.linalg.norm(text[i] - motion[i]) for i in range(64)])
    assert matching_score(text, motion) == pytest.approx(expected)


# --- Frechet distance --------------------------------------------------------------------------------------
def test_fid_of_identical_sets_is_zero():
    emb = np.random.default_rng(5).normal(size=(500, 32))
    assert frechet_distance(emb, emb) == pytest.approx(0.0, abs=1e-8)


def test_fid_matches_closed_form_for_given_gaussians():
    rng = np.random.default_rng(6)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    sigma1, sigma2 = random_spd(rng, 12), random_spd(rng, 12)
    assert frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) == pytest.approx(
        reference_fid(mu1, sigma1, mu2, sigma2), rel=1e-8
    )
    # Diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2 exactly.
    a, b = rng.uniform(0.5, 2.0, 12), rng.uniform(0.5, 2.0, 12)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_fid_of_shifted_gaussian_samples_approaches_closed_form():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(20000, 4))
    gen = rng.normal(size=(20000, 4)) * 2.0 + np.array([1.0, -1.0, 0.0, 0.5])
    expected = (1 + 1 + 0 + 0.25) + 4 * (np.sqrt(4) - 1) ** 2  # shift^2 + sum (sqrt(4) - sqrt(1))^2
    assert frechet_distance(real, gen) == pytest.approx(expected, rel=0.05)


def test_fid_with_singular_covariance_is_finite_and_correct():
    rng = np.random.default_rng(8)
    real, gen = rng.normal(size=(10, 50)), rng.normal(size=(12, 50)) + 0.5  # fewer samples than dims
    mu1, sigma1 = gaussian_stats(real)
    mu2, sigma2 = gaussian_stats(gen)
    value = frechet_distance(real, gen)
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(reference_fid(mu1, sigma1, mu2, sigma2), rel=1e-3)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-4)
    # A constant dimension (zero variance) in both sets.
    real[:, 0] = gen[:, 0] = 1.0
    assert np.isfinite(frechet_distance(real, gen))


def test_fid_raises_instead_of_returning_nan_for_a_non_psd_covariance():
    with pytest.raises(FrechetDistanceError, match="not positive semi-definite"):
        frechet_distance_from_stats(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="equal in length"):
        frechet_distance_from_stats(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(np.zeros((1, 3)))


# --- diversity and multimodality ------------------------------------------------------------------------------
def test_diversity_matches_all_pairs_mean_for_large_samples():
    emb = np.random.default_rng(9).normal(size=(3000, 8))
    all_pairs = cdist(emb, emb).mean()  # ordered pairs including self-pairs: the estimator's expectation
    assert diversity(emb, num_pairs=3000, seed=0) == pytest.approx(all_pairs, rel=0.02)
    assert diversity(emb, num_pairs=300, seed=1) == pytest.approx(all_pairs, rel=0.06)


def test_diversity_is_seeded_and_checks_pair_count():
    emb = np.random.default_rng(10).normal(size=(50, 4))
    assert diversity(emb, 20, seed=3) == diversity(emb, 20, seed=3) != diversity(emb, 20, seed=4)
    assert default_diversity_pairs(50) == 49 and default_diversity_pairs(5000) == 300
    assert diversity(emb) == diversity(emb, num_pairs=49)
    with pytest.raises(ValueError, match="without replacement"):
        diversity(emb, num_pairs=51)


def test_multimodality_exact_and_sampled():
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(5, 6, 3))
    expected = np.mean(
        [np.linalg.norm(emb[p, i] - emb[p, j]) for p in range(5) for i in range(6) for j in range(6) if i != j]
    )
    assert multimodality(emb) == pytest.approx(expected)
    assert multimodality(emb, num_pairs=4000, seed=0) == pytest.approx(expected, rel=0.03)
    assert multimodality(emb, 10, seed=1) == multimodality(emb, 10, seed=1)
    same = np.repeat(rng.normal(size=(4, 1, 3)), 5, axis=1)  # identical generations: no multimodality
    assert multimodality(same) == 0.0 and multimodality(same, 7) == 0.0
    with pytest.raises(ValueError, match=">= 2 generations"):
        multimodality(np.zeros((3, 1, 4)))


def test_embedding_metrics_bundle():
    rng = np.random.default_rng(12)
    text = rng.normal(size=(64, 8))
    out = embedding_metrics(text, text, gaussian_stats(text), seed=0)
    assert out["r_precision_top1"] == 1.0 and out["mm_dist"] == 0.0 and out["fid"] == pytest.approx(0.0, abs=1e-8)
    assert out["diversity"] == diversity(text, None, 0)
    assert "fid" not in embedding_metrics(text, text)
