"""GPED's data manipulations (SPEC_seeds S3.15) and the offline OOD sets (0.4): exact squares, uniform
corners (chi-square, with controls that must fail), nested subsamples, and each OOD set's definition."""
import numpy as np
import pytest
from scipy import stats

from kd_ref.datasets import (MNIST_MEAN, MNIST_STD, OCCLUSION_SIDES, OOD_SETS, heldout_classes, masking_rate, occlude,
                             ood_set, subsample)
from kd_ref.toydata import seven_segment_digits, synthetic_digits


def square_corners(covered, side, image_side=28):
    """The top-left corner (row, column) of each image's zeroed square, after checking it is exactly one
    side x side square of pixels."""
    imgs = covered.reshape(-1, image_side, image_side)
    assert np.all(imgs.sum(axis=(1, 2)) == side * side)               # exactly s^2 pixels
    r0, c0 = np.argmax(imgs.any(axis=2), axis=1), np.argmax(imgs.any(axis=1), axis=1)
    pixels = np.arange(image_side)
    rows = (pixels >= r0[:, None]) & (pixels < r0[:, None] + side)
    cols = (pixels >= c0[:, None]) & (pixels < c0[:, None] + side)
    np.testing.assert_array_equal(imgs, rows[:, :, None] & cols[:, None, :])   # ... filling one square
    return np.stack([r0, c0], axis=1)


def uniform_p_value(corners, n_positions):
    """Chi-square p-value of corners (N, 2) against the uniform law on {0..n_positions-1}^2."""
    cells = corners[:, 0] * n_positions + corners[:, 1]
    if cells.min() < 0 or cells.max() >= n_positions ** 2:
        return 0.0                                                     # outside the support
    counts = np.bincount(cells, minlength=n_positions ** 2)
    return stats.chisquare(counts).pvalue


@pytest.mark.parametrize("side", [1, 7, 15, 20, 26, 27])
def test_occlusion_zeroes_one_square_of_side_s_with_uniform_corners(side):
    rng = np.random.default_rng(side)
    k = 28 - side                                                      # corners 0..27 - side on each axis
    n = 30 * k * k                                                     # 30 expected per cell
    x = rng.uniform(0.1, 1.0, size=(n, 784))                            # no zero pixels before occlusion
    out = occlude(x, side, rng)
    covered = out == 0.0
    corners = square_corners(covered, side)
    np.testing.assert_array_equal(out[~covered], x[~covered])          # the rest untouched
    assert corners.max() <= 27 - side                                  # the code's exclusive randint(0, 28 - s)
    assert not covered.reshape(n, 28, 28)[:, 27, :].any() and not covered.reshape(n, 28, 28)[:, :, 27].any()
    if k > 1:
        assert uniform_p_value(corners, k) > 1e-3
        # controls that must fail: the inclusive range randint(0, 29 - s), and a triangular law on the right range
        assert uniform_p_value(rng.integers(0, k + 1, size=(n, 2)), k) < 1e-6
        tri = (rng.integers(0, k, size=(n, 2)) + rng.integers(0, k, size=(n, 2))) // 2
        assert uniform_p_value(tri, k) < 1e-6
    else:                                                              # s = 27: the only corner is (0, 0)
        assert np.all(corners == 0)


def test_occlusion_of_side_zero_changes_nothing_but_draws_the_corners():
    rng, twin = np.random.default_rng(0), np.random.default_rng(0)
    x = rng.random((5, 784))
    twin.random((5, 784))
    np.testing.assert_array_equal(occlude(x, 0, rng), x)
    twin.integers(0, 28, size=(5, 2))
    assert rng.random() == twin.random()
    small = rng.uniform(0.5, 1.0, size=(400, 16))                      # any square side S: here 4 x 4
    assert np.all(np.sum(occlude(small, 2, rng) == 0, axis=1) == 4)


def test_masking_rates_are_side_squared_over_784():
    assert masking_rate(26) == 676 / 784 and round(masking_rate(26), 4) == 0.8622
    rates = [round(100 * masking_rate(s), 1) for s in OCCLUSION_SIDES]
    assert rates == [0.0, 6.2, 12.8, 28.7, 51.0, 86.2]                  # the spec rounds 49/784 = 6.25% up to 6.3
    assert masking_rate(2, image_side=4) == 0.25


def test_bad_occlusion_input_is_named_before_anything_is_drawn():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    x = np.ones((2, 784))
    for bad in (-1, 28, 40):
        with pytest.raises(ValueError, match=rf"side: expected a mask side in 0..27 .*received {bad}$"):
            occlude(x, bad, rng)
        with pytest.raises(ValueError, match=r"side: expected a mask side in 0..27"):
            masking_rate(bad)
    with pytest.raises(TypeError, match=r"side: expected an integer mask side in 0..27, received 2.5"):
        occlude(x, 2.5, rng)
    with pytest.raises(ValueError, match=r"x: expected at least one row holding a square image .*\(2, 783\)"):
        occlude(np.ones((2, 783)), 3, rng)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        occlude(x, 3, 0)
    assert rng.bit_generator.state == state


def test_subsamples_are_distinct_aligned_nested_and_uniform():
    rng = np.random.default_rng(1)
    x = np.arange(40).reshape(20, 2)
    y = np.arange(20) * 10
    xs, ys = subsample(x, y, 7, rng)
    assert xs.shape == (7, 2) and xs.dtype == x.dtype and np.unique(xs[:, 0]).size == 7
    np.testing.assert_array_equal(ys, xs[:, 0] * 5)                    # rows and labels stay together
    big, _ = subsample(x, y, 12, np.random.default_rng(5))
    small, _ = subsample(x, y, 4, np.random.default_rng(5))
    np.testing.assert_array_equal(small, big[:4])                       # nested subsets
    # inclusion probability n/N = 2/5 for every row: within 4 standard errors over 20,000 draws
    draws = 20_000
    hits = np.zeros(5)
    for _ in range(draws):
        hits[subsample(np.eye(5), np.arange(5), 2, rng)[1]] += 1
    se = np.sqrt(0.4 * 0.6 / draws)
    assert np.max(np.abs(hits / draws - 0.4)) < 4 * se
    with pytest.raises(ValueError, match=r"n: expected at most the 20 examples of x, received 21"):
        subsample(x, y, 21, rng)
    with pytest.raises(ValueError, match=r"y: expected shape \(20,\) \(one label per row of x\), .* \(19,\)"):
        subsample(x, y[:-1], 3, rng)


def test_ood_sets_follow_their_definitions():
    rng = np.random.default_rng(2)
    (x, y), _ = synthetic_digits(300, 1, rng)
    for name in OOD_SETS:
        out = ood_set(name, x, np.random.default_rng(3), labels=y if name.startswith("heldout") else None)
        assert out.dtype == np.float64 and out.shape[1] == 784 and out.min() >= 0.0 and out.max() <= 1.0
        assert out.shape[0] == (np.sum(y >= 5) if name.startswith("heldout") else 300)
    imgs = x.reshape(-1, 28, 28)
    flipped = ood_set("hflip", x, rng).reshape(-1, 28, 28)
    assert all(flipped[n, r, c] == imgs[n, r, 27 - c] for n, r, c in [(0, 3, 5), (7, 20, 0), (299, 14, 27)])
    rotated = ood_set("rot90", x, rng).reshape(-1, 28, 28)
    assert all(rotated[n, r, c] == imgs[n, c, 27 - r] for n, r, c in [(0, 3, 5), (7, 20, 0), (299, 14, 27)])
    np.testing.assert_array_equal(ood_set("rot90", ood_set("rot90", ood_set("rot90", ood_set("rot90", x, rng), rng),
                                                           rng), rng), x)
    np.testing.assert_array_equal(ood_set("invert", x, rng), 1.0 - x)
    # one permutation for every image: recovered from an image of distinct values
    probe = np.vstack([np.arange(784) / 783.0, x[:5]])
    permuted = ood_set("pixel_permute", probe, rng)
    perm = np.rint(permuted[0] * 783).astype(int)
    assert np.array_equal(np.sort(perm), np.arange(784)) and not np.array_equal(perm, np.arange(784))
    np.testing.assert_array_equal(permuted[1:], x[:5][:, perm])
    digits = ood_set("synthetic_digits", x, np.random.default_rng(4))
    np.testing.assert_array_equal(digits, seven_segment_digits(300, np.random.default_rng(4))[0])
    held = ood_set("heldout:5-9", x, rng, labels=y)
    np.testing.assert_array_equal(held, x[y >= 5])
    np.testing.assert_array_equal(heldout_classes("heldout:5-9"), [5, 6, 7, 8, 9])


def test_noise_sets_have_their_exact_laws():
    big = np.zeros((200, 784))
    noise = ood_set("gaussian_noise", big, np.random.default_rng(6)).ravel()
    n = noise.size
    for frac, p in ((np.mean(noise == 0.0), stats.norm.cdf(-MNIST_MEAN / MNIST_STD)),     # clipped at 0
                    (np.mean(noise == 1.0), stats.norm.sf((1 - MNIST_MEAN) / MNIST_STD))):  # and at 1
        assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / n)
    inner = noise[(noise > 0) & (noise < 1)]
    truncated = stats.truncnorm(-MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD, MNIST_MEAN, MNIST_STD)
    assert abs(inner.mean() - truncated.mean()) < 4 * truncated.std() / np.sqrt(inner.size)
    uniform = ood_set("uniform_noise", big, np.random.default_rng(7)).ravel()
    assert abs(uniform.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n) and stats.kstest(uniform[:5000], "uniform").pvalue > 1e-3


def test_seven_segment_digits_are_one_set_of_synthetic_digits():
    (a, ya), (b, yb) = synthetic_digits(30, 20, np.random.default_rng(8))
    rng = np.random.default_rng(8)
    (c, yc), (d, yd) = seven_segment_digits(30, rng), seven_segment_digits(20, rng)
    for u, v in ((a, c), (ya, yc), (b, d), (yb, yd)):
        np.testing.assert_array_equal(u, v)


def test_bad_ood_input_is_named():
    rng = np.random.default_rng(0)
    x = np.full((4, 784), 0.5)
    with pytest.raises(ValueError, match=r"name: expected one of \['synthetic_digits'.*received 'kmnist'"):
        ood_set("kmnist", x, rng)
    for bad in ("heldout:9-5", "heldout:5", "heldout:a-b"):
        with pytest.raises(ValueError, match=rf"name: expected 'heldout:a-b' with integers a <= b.*{bad!r}"):
            ood_set(bad, x, rng, labels=np.arange(4))
    with pytest.raises(ValueError, match=r"labels: expected the test labels, shape \(4,\), for 'heldout:5-9'"):
        ood_set("heldout:5-9", x, rng)
    with pytest.raises(ValueError, match=r"labels: expected test images of the classes 5..9 .*received none"):
        ood_set("heldout:5-9", x, rng, labels=np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=r"labels: expected None for 'invert'"):
        ood_set("invert", x, rng, labels=np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=r"x_test: expected grey levels in \[0, 1\], received values in \[0.5, 2.0\]"):
        ood_set("invert", np.hstack([x[:, :-1], np.full((4, 1), 2.0)]), rng)
