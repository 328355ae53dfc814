"""``kd-ref bench dse``: cost of derivative matching against cross entropy (section 2.1.2).

Prints, for the 784-50-30-10 student (ReLU, ReLU, log-softmax) at each minibatch
size, the time of one cross-entropy gradient and of one derivative-square-error
gradient (both from an already labelled minibatch, so only the student's work is
timed), and their ratio. The argument of (2.9-2.13) predicts about 2C = 20 for
C = 10 classes: one backprop plus one reduced R{backprop} per class, against one
backprop. The derivative square error is timed both ways ``DerivativeSquareErrorLoss``
offers: all classes on a class-stacked minibatch (the default) and one class at a
time. Also times the teacher: an ensemble of 30 networks 784-500-300-10
labelling minibatches with input derivatives (one forward and C input-only
backprops per member), in examples per second, against the dataset generator's
label cache (:mod:`kd_ref.distill.label_cache`): the rate at which minibatches'
labels are read from its float32 memory maps, the one-off rate of building it
(chunks of 500 images), and the rate both give together over a student's
``--passes`` passes.
"""
import tempfile
from pathlib import Path

import numpy as np

from ..cli import ArgumentParser
from ..distill.compression import CrossEntropyLoss, DerivativeSquareErrorLoss, EnsembleTeacher
from ..distill.label_cache import CHUNK, DTYPE, LabelCache
from ..mlp import MLP
from ..timing import best_time
from ._timing import add_common_args, positive_int, start

STUDENT = [784, 50, 30, 10]
MEMBER = [784, 500, 300, 10]
NAMES = ["relu", "relu", "log_softmax"]


def student_times(batch_sizes, rng, repeats=5):
    """Rows (N, t_ce, t_dse_stacked, t_dse_loop) in seconds for the student at each batch size."""
    student = MLP(STUDENT, NAMES, rng)
    teacher = EnsembleTeacher([MLP(STUDENT, NAMES, rng)], combine="log_mean_exp")  # labels only, not timed
    ce, stacked, loop = CrossEntropyLoss(), DerivativeSquareErrorLoss(), DerivativeSquareErrorLoss(stacked=False)
    rows = []
    for n in batch_sizes:
        x = rng.uniform(size=(n, STUDENT[0]))
        labels = teacher.label(x, derivatives=True)
        rows.append((n, best_time(lambda: ce(student, x, labels), repeats),
                     best_time(lambda: stacked(student, x, labels), repeats),
                     best_time(lambda: loop(student, x, labels), repeats)))
    return rows


def teacher_rate(n_members, batch, rng, derivatives=True, repeats=3):
    """Examples per second an ensemble of ``n_members`` 784-500-300-10 networks labels."""
    teacher = EnsembleTeacher([MLP(MEMBER, NAMES, rng) for _ in range(n_members)], combine="log_mean_exp")
    x = rng.uniform(size=(batch, MEMBER[0]))
    return batch / best_time(lambda: teacher.label(x, derivatives=derivatives), repeats, min_seconds=0.5)


def cache_rate(n_rows, batch, rng, c=10, d=784, repeats=3):
    """Examples per second whose labels (probabilities and input derivatives) a LabelCache of ``n_rows`` float32
    rows on disk gives, minibatches of ``batch`` random rows."""
    with tempfile.TemporaryDirectory() as folder:
        for name, shape in (("probs", (n_rows, c)), ("d_log_probs", (n_rows, c, d))):
            out = np.lib.format.open_memmap(Path(folder) / f"{name}.npy", mode="w+", dtype=DTYPE, shape=shape)
            for start in range(0, n_rows, CHUNK):
                out[start:start + CHUNK] = rng.uniform(size=(min(CHUNK, n_rows - start), *shape[1:]))
            out.flush()
            del out
        cache = LabelCache.open(folder)
        return batch / best_time(lambda: cache[rng.integers(0, n_rows, size=batch)], repeats, min_seconds=0.5)


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref bench dse", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, nargs="+", default=[20, 100], help="student minibatch sizes")
    parser.add_argument("--members", type=positive_int, default=30, help="ensemble size for the teacher timing")
    parser.add_argument("--teacher-batch", type=positive_int, default=20, help="minibatch of the teacher timing")
    parser.add_argument("--cache-rows", type=positive_int, default=6000, help="images in the timed label cache "
                        "(default 6,000, the thesis's 10%%: 188 MB)")
    parser.add_argument("--passes", type=positive_int, default=40, help="passes a student makes over the cached "
                        "images (default 40, the thesis's)")
    args = add_common_args(parser).parse_args(argv)
    rng, _ = start(args)
    c = STUDENT[-1]
    print(f"student {'-'.join(map(str, STUDENT))} (relu, relu, log_softmax), C = {c} classes; "
          f"predicted DSE / CE ratio about 2C = {2 * c}\n")
    print(f"{'batch':>6} {'CE step':>10} {'DSE stack':>10} {'DSE loop':>10} {'stack/CE':>9} {'loop/CE':>8}")
    for n, t_ce, t_st, t_loop in student_times(args.batch, rng):
        print(f"{n:>6} {t_ce * 1e3:>8.3f}ms {t_st * 1e3:>8.3f}ms {t_loop * 1e3:>8.3f}ms "
              f"{t_st / t_ce:>9.1f} {t_loop / t_ce:>8.1f}")
    print("\nCE step = forward + backprop with parameter gradients; DSE step = forward, then per class one")
    print("input-only backprop and one reduced R{backprop} (v = (0, d_i)); 'stack' runs the C classes on a")
    print("class-stacked minibatch (C N rows, the default), 'loop' one class at a time. Teacher labelling is")
    print("not timed here.\n")
    with_d = teacher_rate(args.members, args.teacher_batch, rng, derivatives=True)
    without = teacher_rate(args.members, args.teacher_batch, rng, derivatives=False)
    print(f"teacher: ensemble of {args.members} x {'-'.join(map(str, MEMBER))}, minibatch {args.teacher_batch}")
    print(f"  probabilities only:              {without:>9.1f} examples/s")
    print(f"  with input derivatives (C = {c}): {with_d:>9.1f} examples/s  ({without / with_d:.1f}x slower)")
    built = teacher_rate(args.members, CHUNK, rng, derivatives=True, repeats=1)
    read = cache_rate(args.cache_rows, args.teacher_batch, rng)
    both = 1.0 / (1.0 / read + 1.0 / (built * args.passes))
    print(f"label cache of {args.cache_rows} images (float32 memory maps), minibatch {args.teacher_batch}:")
    print(f"  building it, chunks of {CHUNK} (once):  {built:>9.1f} examples/s")
    print(f"  reading labels from it:              {read:>9.1f} examples/s  ({read / with_d:.0f}x the teacher's)")
    print(f"  over {args.passes} passes, building included: {both:>9.1f} examples/s  "
          f"({both / with_d:.1f}x labelling every minibatch)")
    return 0
