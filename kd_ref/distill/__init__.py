"""Distillation methods: model compression (ch. 2), compact predictive distributions (ch. 3), tractable generative models (ch. 4).

One protocol serves the three chapters (2.3-2.7, 3.32-3.39, 4.23-4.25): a student
q(.; theta) is fitted to a teacher by minimising an expected loss E_p(x)[l(x, theta)]
with stochastic gradient steps on minibatches x_1..x_N drawn from a data generator.
Its four parts:

``inputs``
    callable () -> x, ndarray of shape (N, D): the data generator p(x). It holds its
    own ``numpy.random.Generator`` (and, for a resumable run, ``state()`` and
    ``load_state()``; see :mod:`kd_ref.optim`). Chapter 2: :class:`~.compression.DatasetGenerator`,
    :class:`~.compression.NADEGenerator`, :class:`~.compression.NoiseGenerator` and MUNGE's
    :class:`~.munge.MungeGenerator` (S1.8); chapter 3:
    :class:`~.predictive.InputGenerator`; chapter 4: :class:`~.generative.ChainStream`.
``teacher``
    callable x -> targets: what the teacher says at x that the loss compares with,
    made by each chapter's ``teacher_targets(student, teacher, loss)`` (which also
    checks the minibatch, naming the generator). Chapter 2: :class:`~.compression.Labels`;
    chapter 3: :class:`~.predictive.ClassTargets`; chapter 4: log phi(x) or d log phi(x)/dx.
``loss``
    callable ``loss(student, x, targets) -> (value, grad)``:

    * ``value``, a float: (1/N) sum_n l(x_n, theta), the loss *averaged over the
      minibatch* and *minimised* (an objective to maximise, such as a log-likelihood,
      enters with its sign flipped);
    * ``grad``, ndarray of shape (P,): d value / d theta for the P trained parameters,
      a flat vector in the order of ``student.params`` (chapter 3 trains the first
      layer only, and its losses return that part).

    Every loss has a ``name`` (for labels and progress lines). Each chapter module
    lists its losses in one registry of one shape, ``LOSSES = {short name: loss
    class}``; ``LOSSES[name](...)`` makes a loss (a class with parameters, such as
    chapter 4's square error, takes them there).
``student``
    a model whose parameters are the flat float64 vector ``student.params``
    (a :class:`kd_ref.mlp.MLP` in chapters 2-3, a :class:`kd_ref.nade.NADE` in chapter 4).

:func:`distill` is the one training loop: each step draws x, lets the teacher label it
on the fly (nothing but the current minibatch is held), evaluates the loss and makes one
optimiser step, all through :func:`kd_ref.optim.train` (checkpoints, progress, monitor).
Chapter 3's :func:`~.predictive.train_compact` and chapter 4's :func:`~.generative.distill_nade`
are uses of it with that chapter's optimiser, parameters and monitor. GPED's
:func:`~.gped.gped_distill` (SPEC_seeds S3.11) keeps the loss protocol and ``train`` but draws its
targets differently: a Markov chain over the teacher's parameters advances between steps and an
estimator turns each step's teacher values into targets for rows of a fixed input set.
"""
from ..optim import train


def objective(student, loss, teacher):
    """The minibatch objective x -> loss(student, x, teacher(x)) for :func:`kd_ref.optim.train` (2.7, 4.25).

    Parameters
    ----------
    student : model with ``params``
    loss : callable (student, x, targets) -> (value, grad)
    teacher : callable x -> targets

    Returns
    -------
    callable, ndarray of shape (N, D) -> (float, ndarray of shape (P,))
    """
    for arg, name in ((loss, "loss"), (teacher, "teacher")):
        if not callable(arg):
            raise TypeError(f"{name}: expected a callable (see kd_ref.distill), received {type(arg).__name__}")

    def minibatch_objective(x):
        return loss(student, x, teacher(x))

    return minibatch_objective


def distill(student, loss, inputs, teacher, optimizer, n_steps, *, params=None, **train_kwargs):
    """Train ``student`` to mimic ``teacher`` on minibatches from ``inputs``: the loop of chapters 2, 3 and 4.

    Parameters
    ----------
    student : model with ``params``
        Trained in place.
    loss : callable (student, x, targets) -> (value, grad)
        Minimised; value averaged over the minibatch (module notes).
    inputs : callable () -> ndarray of shape (N, D)
        The data generator; called once per step.
    teacher : callable x -> targets
        A chapter's ``teacher_targets(student, teacher, loss)``.
    optimizer : kd_ref.optim.SGD, Adadelta or similar
    n_steps : int
    params : ndarray of shape (P,), optional
        The trained parameters, a view into ``student.params`` matching the loss's
        gradient; default all of ``student.params``.
    **train_kwargs
        Passed to :func:`kd_ref.optim.train` (monitor, checkpoint, progress, label,
        settings, stateful, ...). ``inputs`` with ``state()`` is checkpointed as
        ``"inputs"`` unless ``stateful`` already lists it, so a resumed run draws on
        the same stream.

    Returns
    -------
    kd_ref.optim.TrainResult
    """
    stateful = train_kwargs.pop("stateful", None)
    if callable(getattr(inputs, "state", None)) and (stateful is None or isinstance(stateful, dict)) and \
            not any(obj is inputs for obj in (stateful or {}).values()):
        stateful = {"inputs": inputs, **(stateful or {})}     # (train refuses a stateful that is not a dict)
    return train(student.params if params is None else params, objective(student, loss, teacher), inputs, optimizer,
                 n_steps, stateful=stateful, **train_kwargs)
