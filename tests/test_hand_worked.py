"""Examples small enough to work by hand: the arithmetic is written out in the comments, and the
library must reproduce it (in the spirit of scikit-learn's hand-checked ``test_fit`` examples)."""
import numpy as np

from kd_ref.mlp import MLP
from kd_ref.mog import MoG, em_step
from kd_ref.nade import NADE, reference_backprop
from kd_ref.outputs import SquareError


def test_backprop_on_a_2_2_1_network_by_hand():
    """Forward (B.2-B.7) and one backward pass (B.8-B.11) of a ReLU 2-2-1 net with square error."""
    net = MLP([2, 2, 1], ["relu", "linear"], np.random.default_rng(0))
    W1, b1 = np.array([[1.0, -1.0], [0.5, 1.0]]), np.array([0.0, -1.0])
    W2, b2 = np.array([[2.0, -1.0]]), np.array([0.5])
    net.set_params(np.concatenate([W1.ravel(), b1, W2.ravel(), b2]))
    x, t = np.array([[1.0, 2.0]]), np.array([[1.0]])
    # a1 = W1 x + b1 = (1 - 2 + 0, 0.5 + 2 - 1) = (-1, 1.5);  x1 = relu(a1) = (0, 1.5)
    # a2 = W2 x1 + b2 = 2 * 0 - 1.5 + 0.5 = -1 = y;           E = (y - t)^2 / 2 = (-2)^2 / 2 = 2
    cache = net.forward(x)
    np.testing.assert_array_equal(cache.a[0], [[-1.0, 1.5]])
    np.testing.assert_array_equal(cache.x[1], [[0.0, 1.5]])
    np.testing.assert_array_equal(cache.y, [[-1.0]])
    # delta2 = dE/da2 = y - t = -2 (linear output)
    # dW2 = delta2 x1^T = (0, -3);  db2 = -2;  dE/dx1 = W2^T delta2 = (-4, 2)
    # delta1 = dE/dx1 * relu'(a1) = (-4 * 0, 2 * 1) = (0, 2)
    # dW1 = delta1 x^T = [[0, 0], [2, 4]];  db1 = (0, 2);  dE/dx = W1^T delta1 = (0.5 * 2, 1 * 2) = (1, 2)
    E, d_params, d_x = net.grad(x, SquareError(t))
    assert E == 2.0
    np.testing.assert_array_equal(d_params, [0.0, 0.0, 2.0, 4.0, 0.0, 2.0, 0.0, -3.0, -2.0])
    np.testing.assert_array_equal(d_x, [[1.0, 2.0]])


def test_one_em_step_by_hand():
    """One batch EM step (D.3-D.9) on three points where the responsibilities are 1/4, 1/2, 3/4."""
    # p = N(-1, 1) / 2 + N(1, 1) / 2, so r_2(x) = sigmoid(log N(x; 1, 1) - log N(x; -1, 1)) = sigmoid(2 x).
    # With c = log(3) / 2, sigmoid(2c) = 3 / 4: the points (-c, 0, c) get r_2 = (1/4, 1/2, 3/4), r_1 = 1 - r_2.
    c = np.log(3.0) / 2.0
    model = MoG.from_1d([0.5, 0.5], [-1.0, 1.0], [1.0, 1.0])
    x = np.array([[-c], [0.0], [c]])
    new, avg_log_lik = em_step(model, x)
    # D.7: w_k = sum_n r_nk / N = 1.5 / 3 = 1/2 each
    np.testing.assert_allclose(new.weights, [0.5, 0.5], rtol=1e-15)
    # D.8: mu_1 = (3/4 (-c) + 1/2 0 + 1/4 c) / 1.5 = (-c / 2) / 1.5 = -c / 3, and mu_2 = c / 3
    np.testing.assert_allclose(new.means[:, 0], [-c / 3, c / 3], rtol=1e-14)
    # D.9: Sigma_1 = (3/4 c^2 + 1/4 c^2) / 1.5 - (c / 3)^2 = 2 c^2 / 3 - c^2 / 9 = 5 c^2 / 9, the same for Sigma_2
    np.testing.assert_allclose(new.covs[:, 0, 0], [5 * c**2 / 9] * 2, rtol=1e-14)
    # D.2 under the input model: p(x) = N(x; 0, 1) exp(-1/2) cosh(x), and cosh(c) = (sqrt 3 + 1 / sqrt 3) / 2 = 2 / sqrt 3,
    # so the mean log-likelihood is -log(2 pi) / 2 - 1/2 - (c^2 + 0 + c^2) / 6 + (2 / 3) log(2 / sqrt 3)
    expected = -0.5 * np.log(2 * np.pi) - 0.5 - c**2 / 3 + (2.0 / 3.0) * np.log(2.0 / np.sqrt(3.0))
    np.testing.assert_allclose(avg_log_lik, expected, rtol=1e-14)


def test_nade_conditionals_and_one_backward_step_by_hand():
    """Conditionals (C.2-C.7) and backprop (C.8-C.15) of a 3-pixel ReLU NADE with two hidden units."""
    # identity order: position d = 1, 2, 3 models pixel o_d = d - 1 (arrays are indexed by pixel)
    nade = NADE(3, 2, None, nonlinearity="relu")
    log3 = np.log(3.0)
    nade.c[...] = [1.0, -1.0]
    nade.W[...] = np.array([[1.0, 2.0], [3.0, -2.0], [1.0, 1.0]]).T   # columns W[:, 0], W[:, 1], W[:, 2]
    nade.V[...] = [[1.0, 2.0], [1.0, -1.0], [0.5, -1.0]]
    nade.b[...] = [-1.0, log3 - 1.0, -log3]
    x = np.array([[1.0, 0.0, 1.0]])
    # a_1 = c = (1, -1);               h_1 = relu(a_1) = (1, 0);  z_1 = b[0] + h_1 . V[0] = -1 + 1 = 0
    # a_2 = a_1 + 1 W[:, 0] = (2, 1);  h_2 = (2, 1);              z_2 = b[1] + h_2 . V[1] = log 3 - 1 + 1 = log 3
    # a_3 = a_2 + 0 W[:, 1] = (2, 1);  h_3 = (2, 1);              z_3 = b[2] + h_3 . V[2] = -log 3 + 0 = -log 3
    # y_d = sigma(z_d) = (1/2, 3 / (3 + 1), 1 / (1 + 3)) = (1/2, 3/4, 1/4)                                   (C.6)
    np.testing.assert_allclose(nade.conditionals(x), [[0.5, 0.75, 0.25]], rtol=1e-15)
    # log q = log y_1 + log(1 - y_2) + log y_3 = log(1/2) + log(1/4) + log(1/4) = -5 log 2              (C.7)
    np.testing.assert_allclose(nade.log_prob(x), [-5 * np.log(2.0)], rtol=1e-15)
    # dz_d = x[o_d] - y_d = (1/2, -3/4, 3/4) = dE/db[o_d]                                              (C.8)
    # dh_d = dz_d V[o_d]: 1/2 (1, 2) = (1/2, 1);  -3/4 (1, -1) = (-3/4, 3/4);  3/4 (1/2, -1) = (3/8, -3/4)  (C.9)
    # da_d = relu'(a_d) dh_d with relu'(a_1) = (1, 0), relu'(a_2) = relu'(a_3) = (1, 1):
    #   da_1 = (1/2, 0), da_2 = (-3/4, 3/4), da_3 = (3/8, -3/4)                                        (C.10)
    # S_1 = da_2 + da_3 = (-3/8, 0);  S_2 = da_3 = (3/8, -3/4);  S_3 = 0                              (C.15)
    # dE/dV[o_d] = dz_d h_d: (1/2, 0), (-3/2, -3/4), (3/2, 3/4)                                        (C.11)
    # dE/dW[:, o_d] = x[o_d] S_d: (-3/8, 0), 0 (x[1] = 0), 0 (S_3 = 0)                                 (C.12)
    # dE/dc = da_1 + da_2 + da_3 = (1/2 - 3/4 + 3/8, 0 + 3/4 - 3/4) = (1/8, 0)                         (C.13)
    # dE/dx[o_d] = z_d + S_d . W[:, o_d]: 0 - 3/8;  log 3 + 9/8 + 3/2 = log 3 + 21/8;  -log 3 + 0      (C.14)
    expected = np.zeros(nade.n_params)
    d_W, d_V, d_b, d_c = nade.param_views(expected)
    d_W[:, 0] = [-3 / 8, 0.0]
    d_V[...] = [[1 / 2, 0.0], [-3 / 2, -3 / 4], [3 / 2, 3 / 4]]
    d_b[...] = [1 / 2, -3 / 4, 3 / 4]
    d_c[...] = [1 / 8, 0.0]
    expected_x = [[-3 / 8, log3 + 21 / 8, -log3]]
    for name, (log_q, d_params, d_x) in (("NADE.grad", nade.grad(x)),
                                         ("reference_backprop", reference_backprop(nade, x))):
        np.testing.assert_allclose(log_q, [-5 * np.log(2.0)], rtol=1e-15, err_msg=name)
        np.testing.assert_allclose(d_params, expected, rtol=1e-15, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(d_x, expected_x, rtol=1e-15, err_msg=name)
