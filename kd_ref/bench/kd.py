"""``kd-ref bench kd``: cost of one temperature-distillation step against one cross-entropy step (S1.A).

Prints, for the 784-50-30-10 student (ReLU, ReLU, log-softmax) at each minibatch
size, the time of one step (value and parameter gradient from an already labelled
minibatch, as ``kd-ref bench dse``; teacher labelling is not timed) of

- Hinton's objective w_soft t^2 soft + w_hard hard (S1.3, ``HintonLoss``): one forward and one
  backprop seeded with both terms' logit derivatives, each term's value and derivative from one
  max-shifted softmax (of a_L/t and of a_L; one for both at t = 1), target <= 1.3 cross-entropy steps;
- centred logit matching (S1.7, ``LogitMatchingLoss``): one forward and one backprop seeded with
  P(z - v), target <= 1.2;
- the derivative square error at temperature t (S1.9, ``TemperedDerivativeSquareErrorLoss``):
  one backprop and one reduced R{backprop} per class, about 2C like today's t = 1 derivative
  square error (``DerivativeSquareErrorLoss``), which is timed beside it,

each divided by one plain cross-entropy step (``CrossEntropyLoss``, thesis 2.5) measured in the
same run. The teacher is an untrained 784-50-30-10 network (timing does not depend on its values).
"""

from ..cli import ArgumentParser, positive_float
from ..distill.compression import CrossEntropyLoss, DerivativeSquareErrorLoss, MLPTeacher
from ..distill.temperature import (HintonLoss, KDTargets, LogitMatchingLoss, TemperedDerivativeSquareErrorLoss,
                                   TemperedTeacher, one_hot)
from ..mlp import MLP
from ..timing import best_time
from ._timing import add_common_args, interleaved_best_times, positive_int, start, try_torch

STUDENT = [784, 50, 30, 10]
NAMES = ["relu", "relu", "log_softmax"]
#: issue 13's targets: at most this many cross-entropy steps
TARGETS = {"soft+hard": 1.3, "logit": 1.2}


def step_times(batch_sizes, t, rng, rounds=3):
    """Rows {N, ce, soft+hard, logit, dse_t, dse_1} of seconds per step for the student at each batch size.

    The five steps are timed in turn, ``rounds`` times, each keeping its best (``interleaved_best_times``).
    """
    student = MLP(STUDENT, NAMES, rng)
    teacher = MLPTeacher(MLP(STUDENT, NAMES, rng))
    ce, hinton, logit = CrossEntropyLoss(), HintonLoss(t), LogitMatchingLoss(centred=True)
    dse_t, dse_1 = TemperedDerivativeSquareErrorLoss(t), DerivativeSquareErrorLoss()
    rows = []
    for n in batch_sizes:
        x = rng.uniform(size=(n, STUDENT[0]))
        plain = teacher.label(x, derivatives=True)                       # labels are made once, not timed
        at_1, at_t = TemperedTeacher(teacher, 1.0).label(x), TemperedTeacher(teacher, t).label(x, derivatives=True)
        targets = KDTargets(at_t, one_hot(rng.integers(0, STUDENT[-1], size=n), STUDENT[-1]))
        steps = {"ce": lambda: ce(student, x, plain), "soft+hard": lambda: hinton(student, x, targets),
                 "logit": lambda: logit(student, x, at_1), "dse_t": lambda: dse_t(student, x, at_t),
                 "dse_1": lambda: dse_1(student, x, plain)}
        rows.append({"N": n, **interleaved_best_times(steps, rounds)})
    return rows


def _torch_ratio(torch, student, x, targets, t, ours):
    """Our soft+hard step time / PyTorch autograd's for the same loss, values and gradient."""
    torch.set_default_dtype(torch.float64)
    Ws = [torch.tensor(W, requires_grad=True) for W in student.W]
    bs = [torch.tensor(b, requires_grad=True) for b in student.b]
    X, P, Y = torch.tensor(x), torch.tensor(targets.soft.probs), torch.tensor(targets.hard)
    params = [p for pair in zip(Ws, bs) for p in pair]

    def step():
        h = X
        for i, (W, b) in enumerate(zip(Ws, bs)):
            h = h @ W.T + b
            h = h if i == len(Ws) - 1 else torch.relu(h)
        soft = -(P * torch.log_softmax(h / t, dim=1)).sum(dim=1).mean()
        hard = -(Y * torch.log_softmax(h, dim=1)).sum(dim=1).mean()
        return torch.autograd.grad(t**2 * soft + hard, params)

    return ours / best_time(step)


def main(argv=None):
    parser = ArgumentParser(prog="kd-ref bench kd", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, nargs="+", default=[20, 100], help="student minibatch sizes")
    parser.add_argument("--t", type=positive_float, default=4.0, help="temperature of the distillation losses")
    args = add_common_args(parser).parse_args(argv)
    rng, _ = start(args)
    c = STUDENT[-1]
    print(f"student {'-'.join(map(str, STUDENT))} (relu, relu, log_softmax), C = {c} classes, t = {args.t:g}; "
          f"each step / one cross-entropy step\n")
    print(f"{'batch':>6} {'CE step':>10} {'soft+hard':>10} {'logit':>8} {'DSE@t':>8} {'DSE@1':>8}   targets")
    rows = step_times(args.batch, args.t, rng)
    for r in rows:
        ratio = {k: r[k] / r["ce"] for k in ("soft+hard", "logit", "dse_t", "dse_1")}
        verdict = ", ".join(f"{k} {'ok' if ratio[k] <= bound else 'OVER'} (<= {bound})" for k, bound in TARGETS.items())
        print(f"{r['N']:>6} {r['ce'] * 1e3:>8.3f}ms {ratio['soft+hard']:>10.2f} {ratio['logit']:>8.2f} "
              f"{ratio['dse_t']:>8.1f} {ratio['dse_1']:>8.1f}   {verdict}; DSE about 2C = {2 * c}")
    torch = try_torch()
    if torch is None:
        print("\n(PyTorch is not installed: the optional autograd comparison was skipped)")
    else:
        student = MLP(STUDENT, NAMES, rng)
        for n in args.batch:
            x = rng.uniform(size=(n, STUDENT[0]))
            soft = TemperedTeacher(MLPTeacher(MLP(STUDENT, NAMES, rng)), args.t).label(x)
            targets = KDTargets(soft, one_hot(rng.integers(0, c, size=n), c))
            ours = best_time(lambda: HintonLoss(args.t)(student, x, targets))
            print(f"batch {n}: soft+hard step, ours / torch autograd {_torch_ratio(torch, student, x, targets, args.t, ours):.2f}")
    print("\nCE step = forward + backprop with parameter gradients (thesis 2.5). soft+hard and logit seed the same")
    print("single backprop at the logits, so they differ from CE only by the seed's softmax work; DSE@t and DSE@1")
    print("are the stacked derivative square error (one input-only backprop and one reduced R{backprop} per class)")
    print("at temperature t (S1.9) and at t = 1 (2.18). No optimiser step is timed (as in `kd-ref bench dse`).")
    return 0
