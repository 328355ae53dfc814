"""Write notebooks/compression.ipynb (Chapter 2, model compression) with nbformat.

Run ``python notebooks/build_compression.py`` after editing the cells below; the
notebook is stored without outputs and executed by the tests.
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", """# Chapter 2: squeezing an ensemble into a small network

A large model (here an ensemble of ReLU networks) is accurate but slow. Model compression
trains a much smaller *student* to reproduce the large *teacher*'s predictions. Four choices
define the procedure (section 2.1 of the thesis):

* the **teacher**, which we only query: probabilities for a minibatch and, if wanted, the input
  derivatives of its log-probabilities;
* the **student**, a network with a log-softmax output layer;
* the **loss**, comparing the two at an input x: cross entropy with the teacher's probabilities
  as soft targets (2.16–2.17), or the squared difference of the input derivatives of the
  log-probabilities (2.18);
* the **data generator** p(x) deciding *where* the two should agree: the training images
  resampled without replacement, images made by a NADE fitted to the training images, or
  Gaussian noise (2.21).

Training minimises the expected loss under p(x) by minibatch steps (2.3, 2.6–2.7). The teacher
labels each minibatch when it is drawn, so only one minibatch is ever in memory.

This notebook uses the quick settings (a few minutes at most; even smaller when the
environment variable `KD_REF_QUICK=1` is set, as the tests do)."""),
    ("code", """import os
import time

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display

from kd_ref import gradcheck
from kd_ref.distill.compression import (CrossEntropyLoss, DerivativeSquareErrorLoss, EnsembleTeacher,
                                        NoiseGenerator)
from kd_ref.experiments import compress
from kd_ref.mlp import MLP

TINY = os.environ.get("KD_REF_QUICK") == "1"
rng = np.random.default_rng(0)"""),
    ("md", """## What a derivative-matching step costs

For class i let g_i = ∂ log y_i/∂x be the student's input gradient and G_i the teacher's. The
derivative square error is Σ_i ‖g_i − G_i‖². Its gradient with respect to the weights θ is
Σ_i (∂g_i/∂θ)ᵀ d_i with d_i = 2(g_i − G_i) (2.9–2.13). Because g_i is itself a gradient (of
E_i = log y_i with respect to x), the product (∂g_i/∂θ)ᵀ d_i is one block of the Hessian of E_i
over (θ, x), multiplied by the direction v = (0, d_i). Pearlmutter's R operator gives such a
product for about the price of a backprop (Appendix A, B.12–B.21), and since the direction has
no weight part the cheaper *reduced* form applies.

So, per class: one backprop to get g_i (and hence d_i), then one reduced R{backprop} whose
parameter part is that class's contribution. With C classes that is about **2C backprops** per
minibatch, against **one** for cross entropy: the cost grows with the number of outputs, not
with the input dimension (784 here), and no Hessian matrix is ever formed.

First, a check that this gradient is right: compare it with central differences on a small
network whose teacher is an ensemble combined by log-mean-exp."""),
    ("code", """student = MLP([4, 6, 3], ["logistic", "log_softmax"], rng)
teacher = EnsembleTeacher([MLP([4, 5, 3], ["relu", "log_softmax"], rng) for _ in range(3)],
                          combine="log_mean_exp")
x = rng.normal(size=(5, 4))
labels = teacher.label(x, derivatives=True)      # probs (5, 3), d log p_i/dx (5, 3, 4)
loss = DerivativeSquareErrorLoss()
p0 = student.params.copy()

def value(p):
    student.params[...] = p
    return loss(student, x, labels)[0]

def grad(p):
    student.params[...] = p
    return loss(student, x, labels)[1]

result = gradcheck.check_gradient(value, grad, p0)
student.params[...] = p0
print(result)"""),
    ("md", """Now the timing on the thesis's student, 784-50-30-10, with C = 10 (the teacher's labels are
computed beforehand, so only the student's work is timed). Our implementation runs the C
classes together on a class-stacked minibatch, which trims some overhead at small minibatches;
the ratio stays of the order of 2C."""),
    ("code", """from kd_ref.bench._timing import best_time

big = MLP([784, 50, 30, 10], ["relu", "relu", "log_softmax"], rng)
mock_teacher = EnsembleTeacher([MLP([784, 50, 30, 10], ["relu", "relu", "log_softmax"], rng)],
                               combine="log_mean_exp")
xb = rng.uniform(size=(20, 784))
lab = mock_teacher.label(xb, derivatives=True)
t_ce = best_time(lambda: CrossEntropyLoss()(big, xb, lab))
t_dse = best_time(lambda: DerivativeSquareErrorLoss()(big, xb, lab))
t_loop = best_time(lambda: DerivativeSquareErrorLoss(stacked=False)(big, xb, lab))
print(f"cross entropy step        {t_ce * 1e3:6.3f} ms")
print(f"derivative square error   {t_dse * 1e3:6.3f} ms  (ratio {t_dse / t_ce:4.1f})")
print(f"  one class at a time     {t_loop * 1e3:6.3f} ms  (ratio {t_loop / t_ce:4.1f});  2C = 20")"""),
    ("md", """## The experiment, small

`compress.run` trains the ensemble (each member on a bootstrap resample), a NADE per amount of
training data, the baseline (the student architecture on the true labels) and the six
students {dataset, NADE, noise} × {cross entropy, derivative square error}, for all the
training images of the setting and for the first 10% of them. MNIST is used when
`KD_REF_DATA` points at it; otherwise a built-in synthetic digit set."""),
    ("code", """try:
    from kd_ref import datasets  # noqa: F401  MNIST via KD_REF_DATA, else its built-in synthetic digits
    data, shape = None, (28, 28)
except ImportError:  # kd_ref.datasets not installed: small toy images made here
    toy = np.random.default_rng(5)
    protos = (toy.uniform(size=(10, 3, 256)) < 0.15).astype(float)
    def toy_images(n):
        y = toy.integers(0, 10, size=n)
        on = np.maximum(protos[y, toy.integers(0, 3, size=n)] * (toy.uniform(size=(n, 256)) < 0.85),
                        toy.uniform(size=(n, 256)) < 0.04)
        return np.clip(on * toy.uniform(0.7, 1.0, size=on.shape) + toy.uniform(0, 0.1, size=on.shape), 0, 1), y
    (xtr, ytr), (xte, yte) = toy_images(2000), toy_images(1000)
    data, shape = compress.Data("toy images", xtr, ytr, xte, yte, (16, 16), 10), (16, 16)
if TINY:
    settings = compress.Settings.quick(n_train=600, n_test=500, members=2, member_passes=2,
                                       student_passes=4, nade_hidden=30, nade_passes=1,
                                       curve_points=5, curve_test=300, progress=False)
else:
    settings = compress.Settings.quick(progress=False)
began = time.perf_counter()
results = compress.run(settings, "compress_run", np.random.default_rng(1), data=data)
print(f"data: {results['data']}; {time.perf_counter() - began:.0f} s")"""),
    ("md", """### What the generators produce

From left to right: training images, their 0.5-thresholded versions (what the NADE is trained
on), NADE samples, and the same samples' conditional-probability images. The students are fed
the last kind: the probability of each pixel being on given the pixels drawn before it is a
grey-level image that covers the input space better than the corners of the hypercube the
binary samples sit on."""),
    ("code", """display(Image(filename=results["files"]["samples"]))
noise = NoiseGenerator(shape[0] * shape[1], 6, rng)()
plt.figure(figsize=(6, 1.3))
plt.imshow(compress.image_grid(np.clip((noise + 2) / 4, 0, 1), shape, cols=6), cmap="gray")
plt.axis("off"); plt.title("Gaussian-noise inputs (scaled to [0, 1] for display)", fontsize=9)
plt.show()"""),
    ("md", """### Progress curves

Test accuracy and average test log-probability against the number of generated examples the
student has seen. The grey line is the ensemble; the dashed line the baseline trained on true
labels."""),
    ("code", """for path in results["files"]["curves"]:
    display(Image(filename=path))"""),
    ("md", """### Tables

Accuracy and average log-probability on the test images, ± 2 standard errors, and the paired
difference to the baseline on the same test images. With the tiny settings used by the tests
the numbers are noisy; `kd-ref run compress --thesis` runs the full design."""),
    ("code", """display(Markdown(results["tables"]))"""),
    ("md", """What to look for (the thesis's reading of its own tables): noise as a generator is much worse
than the images or the NADE; soft teacher labels overfit less than the true labels, visible in
the log-probabilities; with plenty of data cross entropy tends to win, while with little data
matching derivatives transfers more per probe and the NADE's endless fresh images help."""),
]


def build(path=Path(__file__).with_name("compression.ipynb")):
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    print(build())
