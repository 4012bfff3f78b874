"""HyperSelector: learning_rate, then weight_decay, then momentum, from short training curves.

The algorithm (documented in docs/hyperselector.md):

1. Learning rate. An LR range test: one trial whose learning rate ramps exponentially from
   ``init_learning_rate`` to ``end_learning_rate`` over ``total_steps`` (after
   ``warmup_steps`` at ``warmup_lr``). Its loss curve is smoothed (`rules.smooth`, ``window``),
   cut where it diverges (`rules.cut_index`, ``max_thres``) and a named rule
   (`rules.LR_RULES`) picks the learning rate. With ``search_learning_rate=False`` the
   learning rate is ``param_spec.learning_rate``, or the best of a ``learning_rate`` candidate
   list.
   With a final budget (``final_steps``) the pick and its neighbours (`HORIZON_LADDER`) are
   trained at constant learning rates and the best tail wins.
2. weight_decay. One trial per candidate at the chosen learning rate (constant) and the default
   momentum; candidates within ``weight_decay_diff_thres`` of the best, or within the measured
   noise (``noise_ties``), tie, and the tied candidate nearest the default weight_decay wins
   (`rules.choose_weight_decay`).
3. momentum. One trial per candidate at the chosen weight_decay and the same effective
   learning rate ``lr / (1 - momentum)`` as the range test; the best tail wins (with
   ``noise_ties``, the default among those within the noise), and the learning rate is rescaled
   to the chosen momentum.
4. Horizon. With ``final_steps``, the learning rate is scaled by
   ``(total_steps / final_steps) ** alpha`` (``horizon_rule``, `rules.HORIZON_RULES`).

Every trial starts from the same initial weights and sees the same batches in the same order
(the trainer guarantees this); only the hyperparameters differ. Finished trials go to a
`Journal`, so a restarted search reuses them. An `Executor` (`detsearch.executor`) decides where
trials run: in this process one after the other (default), or, with Ray, a stage's unfinished
candidates at once; the journal and the result are the same either way. This module imports no
TensorFlow.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from detsearch.checks import optional_positive_int, positive_int
from detsearch.executor import Executor, LocalExecutor, as_executor, worker_cache
from detsearch.params import ParamSpec, TRAINING_PARAMS, check_value
from detsearch.selector import rules
from detsearch.selector.curves import Curve, LrSchedule, TrialSpec
from detsearch.selector.journal import Journal

if TYPE_CHECKING:  # the protocol lives with the trainers; detsearch.training.base imports this package
    from detsearch.training.base import Trainer

logger = logging.getLogger(__name__)


class ModelSize(enum.Enum):
    """Model complexity; sets the default LR range of the range test."""

    SMALL = "small"
    LARGE = "large"


LARGE_MODEL_PARAMETERS = 5_000_000
"""A model with at least this many trainable parameters is `ModelSize.LARGE` by default
(a ResNet-18 has 11.7M, a MobileNetV2 3.5M, the seed's softmax model 7,850)."""

DEFAULT_LR_RANGE = {
    ModelSize.SMALL: (1e-4, 10.0),
    ModelSize.LARGE: (1e-5, 1.0),
}
"""(init_learning_rate, end_learning_rate) of the range test per model size, for SGD with
momentum. Large networks diverge at learning rates about ten times smaller."""


DEFAULT_HORIZON_RULE = "fourth_root"
"""`SelectorConfig.horizon_rule` by default (measured in tools/bench_selector.py)."""

DETECTOR_HORIZON_RULE = "none"
"""The horizon rule of the detection flows unless one is named: on Model Garden's RetinaNet
(tools/bench_selector.py --task experiment) every scaling lost to none (docs/hyperselector.md,
"Horizon" and "Validation")."""

HORIZON_LADDER = (10 ** -1, 10 ** -0.5, 10 ** 0.5)
"""Learning-rate factors around the range test's pick trained as constant learning-rate trials
when a horizon rule scales the choice to ``final_steps`` and ``lr_refine_factors`` gives none:
the rule scales the best constant learning rate of the trials, not the range test's pick."""


DEFAULT_FINAL_STEPS = 1000
"""The final budget `mox.auto.search` and `detsearch.search` choose for when not told:
``mox.auto.run``'s default ``max_number_of_steps`` (MoXing's signature has no final budget;
the seed program trains 1000 steps)."""


def default_final_steps(total_steps: int) -> int:
    """`DEFAULT_FINAL_STEPS`, or the trials' own length when that is longer (no correction)."""
    return max(DEFAULT_FINAL_STEPS, total_steps) if isinstance(total_steps, int) else DEFAULT_FINAL_STEPS


def model_size_from_parameters(num_parameters: int) -> ModelSize:
    return ModelSize.LARGE if num_parameters >= LARGE_MODEL_PARAMETERS else ModelSize.SMALL


@dataclasses.dataclass(frozen=True)
class SelectorConfig:
    """The selector's settings; names and defaults follow `mox.auto.search`.

    Attributes:
      total_steps: training steps of every trial (after warm-up).
      by_acc: judge by ``acc_name`` (higher is better) instead of ``loss_name`` (lower is better).
      acc_name, loss_name: metric names in the trainer's curves.
      window: smoothing window of the LR range curve, and the number of final points that score
        a candidate trial.
      max_thres: consecutive worsening points tolerated before the LR range curve counts as
        diverged.
      weight_decay_diff_thres: relative score difference within which weight_decay candidates tie.
      warmup_steps, warmup_lr: steps at a fixed learning rate before every trial's schedule.
      evaluate_every_n_steps: one curve point per this many training steps.
      init_learning_rate, end_learning_rate: range of the LR range test; None takes
        `DEFAULT_LR_RANGE` for the model size.
      model_size: None decides from the trainer's parameter count.
      search_learning_rate: run the LR range test; False takes the learning rate from
        param_spec / param_list_spec.
      lr_rule: name in `rules.LR_RULES`.
      lr_refine_factors: after the range test, a ``learning_rate`` candidate stage over the
        rule's pick times 1 and each factor (e.g. ``(10 ** -0.5, 10 ** 0.5)``), trained and
        judged like the other candidates; empty (the default): the rule's pick is taken as is,
        unless a horizon rule scales the choice to ``final_steps`` (then `HORIZON_LADDER`).
      final_steps: the training budget the choice is for (an extension of MoXing's signature).
        None: the trials' own length, no horizon correction and no `HORIZON_LADDER`.
      horizon_rule: name in `rules.HORIZON_RULES`: how the learning rate chosen on
        ``total_steps``-step trials is scaled to ``final_steps``.
      noise_ties: weight_decay and momentum candidates whose tails differ from the best by less
        than the measured noise (`rules.noise_bands`) tie, and the default wins among ties.
    """

    total_steps: int
    by_acc: bool = True
    acc_name: str = "accuracy"
    loss_name: str = "loss"
    window: int = 50
    max_thres: int = 10
    weight_decay_diff_thres: float = 0.05
    warmup_steps: int = 0
    warmup_lr: float = 0.01
    evaluate_every_n_steps: int = 1
    init_learning_rate: float | None = None
    end_learning_rate: float | None = None
    model_size: ModelSize | None = None
    search_learning_rate: bool = True
    lr_rule: str = rules.DEFAULT_LR_RULE
    lr_refine_factors: tuple[float, ...] = ()
    final_steps: int | None = None
    horizon_rule: str = DEFAULT_HORIZON_RULE
    noise_ties: bool = True

    def __post_init__(self):
        for name, minimum in (("total_steps", 1), ("window", 1), ("max_thres", 0), ("warmup_steps", 0),
                              ("evaluate_every_n_steps", 1)):
            positive_int(getattr(self, name), name, minimum=minimum)
        optional_positive_int(self.final_steps, "final_steps")
        if self.horizon_rule not in rules.HORIZON_RULES:
            raise ValueError(f"unknown horizon rule {self.horizon_rule!r}; known: {', '.join(rules.HORIZON_RULES)}")
        if self.evaluate_every_n_steps > self.total_steps:
            raise ValueError(f"evaluate_every_n_steps ({self.evaluate_every_n_steps}) is larger than "
                             f"total_steps ({self.total_steps}): no curve point would be recorded")
        if not (isinstance(self.weight_decay_diff_thres, (int, float)) and self.weight_decay_diff_thres >= 0):
            raise ValueError(f"weight_decay_diff_thres must be a number >= 0, got {self.weight_decay_diff_thres!r}")
        if self.warmup_steps and not (isinstance(self.warmup_lr, (int, float)) and self.warmup_lr > 0):
            raise ValueError(f"warmup_lr must be > 0, got {self.warmup_lr!r}")
        for name in ("init_learning_rate", "end_learning_rate"):
            value = getattr(self, name)
            if value is not None:
                check_value("learning_rate", value)
        if (self.init_learning_rate is not None and self.end_learning_rate is not None
                and not self.init_learning_rate < self.end_learning_rate):
            raise ValueError(f"init_learning_rate ({self.init_learning_rate}) must be below "
                             f"end_learning_rate ({self.end_learning_rate})")
        if self.model_size is not None and not isinstance(self.model_size, ModelSize):
            raise TypeError(f"model_size must be ModelSize.SMALL, ModelSize.LARGE or None, got {self.model_size!r}")
        factors = self.lr_refine_factors
        if not isinstance(factors, tuple) or not all(
                isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0 for f in factors):
            raise ValueError(f"lr_refine_factors must be a tuple of positive numbers, got {factors!r}")
        if self.lr_rule not in rules.LR_RULES:
            raise ValueError(f"unknown lr rule {self.lr_rule!r}; known rules: {', '.join(rules.LR_RULES)}")
        if not self.acc_name or not self.loss_name:
            raise ValueError("acc_name and loss_name must be non-empty")

    def refine_factors(self) -> tuple[float, ...]:
        """The learning-rate factors trained around the range test's pick: ``lr_refine_factors``,
        or `HORIZON_LADDER` when a horizon rule scales the choice to a ``final_steps`` other than
        the trials' length."""
        if (not self.lr_refine_factors and self.final_steps not in (None, self.total_steps)
                and self.horizon_rule != "none"):
            return HORIZON_LADDER
        return self.lr_refine_factors

    def planned_trials(self, param_list_spec: ParamSpec) -> int:
        """The trials a search asks for, reused ones included (what ``on_trial`` counts): the
        range test, the ladder (`refine_factors` and the pick), one per listed candidate."""
        refine = self.refine_factors() if self.search_learning_rate else ()
        return (int(self.search_learning_rate) + (len(refine) + 1 if refine else 0)
                + sum(len(param_list_spec.candidates(n) or ()) for n in TRAINING_PARAMS))

    @property
    def metric_name(self) -> str:
        return self.acc_name if self.by_acc else self.loss_name

    def lr_range(self, model_size: ModelSize) -> tuple[float, float]:
        init, end = DEFAULT_LR_RANGE[model_size]
        init = init if self.init_learning_rate is None else self.init_learning_rate
        end = end if self.end_learning_rate is None else self.end_learning_rate
        if not init < end:
            raise ValueError(f"learning-rate range is empty: init {init} >= end {end}")
        return init, end


@dataclasses.dataclass(frozen=True)
class LrTest:
    """The LR range test and its reading."""

    curve: Curve
    metric: str
    smoothed: np.ndarray
    cut: int
    learning_rate: float
    rule: str
    picks: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "curve": self.curve.to_dict(),
            "metric": self.metric,
            "smoothed": [float(v) if math.isfinite(v) else repr(float(v)) for v in self.smoothed],
            "cut": self.cut,
            "learning_rate": self.learning_rate,
            "rule": self.rule,
            "picks": self.picks,
        }


@dataclasses.dataclass(frozen=True)
class Stage:
    """One candidate stage: every candidate's curve and score, and the choice."""

    name: str
    candidates: tuple[float, ...]
    scores: tuple[float, ...]
    chosen: int
    tied: tuple[int, ...]
    curves: tuple[Curve, ...]
    learning_rates: tuple[float, ...]
    noise: tuple[float, ...] = ()

    @property
    def value(self) -> float:
        return self.candidates[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "candidates": list(self.candidates),
            "scores": [s if math.isfinite(s) else repr(s) for s in self.scores],
            "chosen": self.chosen,
            "tied": list(self.tied),
            "learning_rates": list(self.learning_rates),
            "noise": [n if math.isfinite(n) else repr(n) for n in self.noise],
            "curves": [c.to_dict() for c in self.curves],
        }


@dataclasses.dataclass(frozen=True)
class Horizon:
    """How the trials' learning rate was scaled to the final budget.

    Attributes:
      rule: name in `rules.HORIZON_RULES`.
      trial_steps, final_steps: the trials' length and the budget chosen for.
      exponent: ``alpha`` of ``(trial_steps / final_steps) ** alpha``.
      fitted: the ``fit`` rule's exponent before any fallback (None: too few interior horizons).
      optima: per horizon of the fit, (steps, best learning rate, interior).
      factor: what the trials' learning rate was multiplied by.
      learning_rate: the trials' choice before the factor.
    """

    rule: str
    trial_steps: int
    final_steps: int
    exponent: float
    fitted: float | None
    optima: tuple[tuple[float, float, bool], ...]
    factor: float
    learning_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "optima": [list(o) for o in self.optima]}


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a search chose and everything it saw on the way.

    ``steps_spent`` counts the training steps of every distinct trial the search used once (a
    trial two stages share counts once; trials taken from an earlier run's journal count too:
    it is what the search costs on its own).
    """

    param_spec: ParamSpec
    metric: str
    by_acc: bool
    model_size: ModelSize
    lr_test: LrTest | None
    stages: tuple[Stage, ...]
    trials_run: int
    trials_reused: int
    steps_spent: int
    seconds: float
    horizon: Horizon | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "param_spec": self.param_spec.to_dict(),
            "metric": self.metric,
            "by_acc": self.by_acc,
            "model_size": self.model_size.value,
            "lr_test": None if self.lr_test is None else self.lr_test.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "trials_run": self.trials_run,
            "trials_reused": self.trials_reused,
            "steps_spent": self.steps_spent,
            "seconds": self.seconds,
            "horizon": None if self.horizon is None else self.horizon.to_dict(),
        }


class HyperSelector:
    """Runs the stages against a trainer.

    Args:
      trainer: produces curves (`Trainer`).
      config: `SelectorConfig`.
      journal: where finished trials are kept; None keeps them in memory only.
      on_trial: optional callback ``(name, trial_index, reused, curve)`` after each trial, in
        trial order whatever the executor.
      on_step: optional callback ``(step)`` forwarded to the trainer (in-process trials only).
      executor: where trials run: None or ``"local"`` (this process, one after the other),
        ``"ray"`` or an `Executor`. Other than local, each stage submits its unfinished trials
        together and every trial runs on a copy of the trainer made in the worker: ``trainer``
        must then pickle, or ``trainer_factory`` must build it there.
      trainer_factory: optional picklable ``() -> trainer`` called once per worker process
        instead of shipping ``trainer`` (e.g. a trainer holding a ``tf.data`` pipeline). The
        trainer here still supplies the fingerprint and the parameter count.
    """

    def __init__(self, trainer: Trainer, config: SelectorConfig, journal: Journal | None = None,
                 on_trial: Callable[[str, int, bool, Curve], None] | None = None,
                 on_step: Callable[[int], None] | None = None, executor: Executor | str | None = None,
                 trainer_factory: Callable[[], Trainer] | None = None):
        self.trainer = trainer
        self.config = config
        self.journal = Journal() if journal is None else journal
        self.on_trial = on_trial
        self.on_step = on_step
        self.executor = as_executor(executor)
        self.trainer_factory = trainer_factory
        self._token = uuid.uuid4().hex  # names this selector's trainer in worker processes
        self._fingerprint = None
        self._trials_run = 0
        self._trials_reused = 0
        self._steps_spent = 0
        self._counted: set[str] = set()

    # -- trials ---------------------------------------------------------------------------
    def _key(self, trial: TrialSpec) -> str:
        if self._fingerprint is None:
            self._fingerprint = self.trainer.fingerprint()
        return trial.key(self._fingerprint)

    def _run(self, trial: TrialSpec) -> Curve:
        key = self._key(trial)
        curve = self.journal.get(key)
        reused = curve is not None
        if not reused:
            logger.info("trial %s: %d steps", trial.name, trial.schedule.total_steps)
            curve = self.trainer.run(trial, on_step=self.on_step)
        return self._record(trial, key, curve, reused)

    def _record(self, trial: TrialSpec, key: str, curve: Curve, reused: bool) -> Curve:
        if reused:
            self._trials_reused += 1
            logger.info("trial %s reused from the journal", trial.name)
        else:
            self.journal.put(key, trial.name, trial.key_fields(), curve)
            self._trials_run += 1
        if key not in self._counted:  # a trial asked for twice (stages share one) costs once
            self._counted.add(key)
            self._steps_spent += curve.steps_run
        if self.on_trial is not None:
            self.on_trial(trial.name, self._trials_run + self._trials_reused, reused, curve)
        return curve

    def _run_all(self, trials: Sequence[TrialSpec]) -> list[Curve]:
        """Curves of ``trials``. In-process they run one after the other (`_run`); otherwise the
        unfinished ones go to the executor together, and each finished trial is journaled and
        reported once every trial before it is, so the journal is written in trial order."""
        if isinstance(self.executor, LocalExecutor):
            return [self._run(trial) for trial in trials]
        keys = [self._key(trial) for trial in trials]
        found = [self.journal.get(key) for key in keys]
        curves = list(found)
        pending = [i for i, curve in enumerate(found) if curve is None]
        settled = 0

        def settle():
            nonlocal settled
            while settled < len(trials) and curves[settled] is not None:
                self._record(trials[settled], keys[settled], curves[settled], found[settled] is not None)
                settled += 1

        def arrived(index: int, curve: Curve) -> None:
            curves[pending[index]] = curve
            settle()

        settle()
        if pending:
            logger.info("trials %s on %r", ", ".join(trials[i].name for i in pending), self.executor)
            source = (self._token, self.trainer if self.trainer_factory is None else self.trainer_factory,
                      self.trainer_factory is not None)
            self.executor.map(_run_trial, [trials[i] for i in pending], shared=source, on_result=arrived)
        return curves

    def _values(self, curve: Curve) -> np.ndarray:
        return rules.badness(curve.metric(self.config.metric_name), self.config.by_acc)

    def _loss(self, curve: Curve) -> np.ndarray | None:
        return curve.metric(self.config.loss_name) if self.config.loss_name in curve.metrics else None

    def _constant(self, learning_rate: float) -> LrSchedule:
        c = self.config
        return LrSchedule(start=learning_rate, steps=c.total_steps, warmup_steps=c.warmup_steps, warmup_lr=c.warmup_lr)

    # -- stages ---------------------------------------------------------------------------
    def lr_range_test(self, model_size: ModelSize, momentum: float | None, weight_decay: float) -> LrTest:
        c = self.config
        init, end = c.lr_range(model_size)
        schedule = LrSchedule(start=init, end=end, steps=c.total_steps, warmup_steps=c.warmup_steps,
                              warmup_lr=c.warmup_lr)
        curve, = self._run_all([TrialSpec(schedule, momentum, weight_decay, c.evaluate_every_n_steps,
                                          name="lr_range_test")])
        # The range test reads the loss whatever by_acc says (by_acc judges the candidates): the
        # loss moves with the learning rate where accuracy saturates, and every rule read off the
        # accuracy curve picked worse learning rates on MNIST (docs/hyperselector.md).
        loss = curve.metric(c.loss_name)
        smoothed = rules.smooth(loss, c.window)
        cut = rules.cut_index(smoothed, c.max_thres, loss=loss)
        lrs = curve.learning_rates
        picks = {name: rules.choose_lr(lrs, smoothed, cut, name) for name in rules.LR_RULES} if cut else {}
        learning_rate = rules.choose_lr(lrs, smoothed, cut, c.lr_rule)
        return LrTest(curve, c.loss_name, smoothed, cut, learning_rate, c.lr_rule, picks)

    def candidate_stage(self, name: str, candidates: Sequence[float], base: dict[str, Any],
                        default: float | None = None) -> Stage:
        """One trial per candidate of ``name``, the others held at ``base``.

        Momentum candidates keep the effective learning rate ``lr / (1 - momentum)`` of ``base``
        (the step size the range test measured): momentum ``m`` trains at
        ``base_lr * (1 - m) / (1 - base_momentum)``.
        """
        c = self.config
        trials, learning_rates = [], []
        for value in candidates:
            params = {**base, name: value}
            if name == "momentum":
                params["learning_rate"] = coupled_learning_rate(base["learning_rate"], base["momentum"], value)
            learning_rates.append(params["learning_rate"])
            trials.append(TrialSpec(self._constant(params["learning_rate"]), params["momentum"],
                                    params["weight_decay"], c.evaluate_every_n_steps, name=f"{name}={value:g}"))
        curves = self._run_all(trials)
        scores = [math.inf if curve.diverged else rules.tail_score(self._values(curve), c.window, loss=self._loss(curve))
                  for curve in curves]
        bands = None
        if c.noise_ties and name != "learning_rate":
            bands = rules.noise_bands(scores, [self._values(curve)[-c.window:] for curve in curves])
        if name == "weight_decay":
            chosen = rules.choose_weight_decay(candidates, scores, c.weight_decay_diff_thres, default, bands)
            tied = rules.ties(scores, c.weight_decay_diff_thres, bands)
        elif name == "momentum":
            chosen = rules.choose_momentum(candidates, scores, default, bands)
            tied = rules.ties(scores, 0.0, bands)
        else:
            chosen = rules.choose_best(candidates, scores, name)
            tied = [chosen]
        return Stage(name, tuple(candidates), tuple(scores), chosen, tuple(tied), tuple(curves),
                     tuple(learning_rates), () if bands is None else tuple(bands))

    def horizon(self, learning_rate: float, ladder: Stage | None) -> Horizon | None:
        """The horizon correction of ``learning_rate`` (None without ``final_steps``).

        ``fit`` reads the constant learning-rate trials of ``ladder`` (the learning_rate stage);
        without one, or with too few interior optima, it falls back to
        `rules.FIT_FALLBACK_EXPONENT`.
        """
        c = self.config
        if c.final_steps is None:
            return None
        fitted, optima = None, []
        if c.horizon_rule != "fit":
            exponent = rules.HORIZON_EXPONENTS[c.horizon_rule]
        else:
            if ladder is not None:
                curves = [(curve.steps, self._values(curve)) for curve in ladder.curves]
                fitted, optima = rules.fit_horizon_exponent(ladder.candidates, curves, c.total_steps)
            exponent = rules.FIT_FALLBACK_EXPONENT if fitted is None else fitted
        factor = rules.horizon_factor(exponent, c.total_steps, c.final_steps)
        return Horizon(c.horizon_rule, c.total_steps, c.final_steps, exponent, fitted, tuple(optima), factor,
                       learning_rate)

    def select(self, param_spec: ParamSpec, param_list_spec: ParamSpec | None = None) -> SearchResult:
        """Chooses learning_rate, weight_decay and momentum.

        Args:
          param_spec: default values (``momentum`` and ``weight_decay`` used by stages that do
            not search them; ``learning_rate`` required when it is not searched).
          param_list_spec: candidate lists for ``weight_decay``, ``momentum`` and (only with
            ``search_learning_rate=False``) ``learning_rate``. Threshold names are ignored here:
            they belong to the detection sweep.

        Returns:
          `SearchResult` whose ``param_spec`` is ``param_spec`` with the chosen values.
        """
        started = time.perf_counter()
        c = self.config
        param_list_spec = ParamSpec() if param_list_spec is None else param_list_spec
        check_search_specs(param_spec, param_list_spec, c.search_learning_rate)
        model_size = c.model_size or model_size_from_parameters(self.trainer.num_parameters())
        chosen = {
            "learning_rate": param_spec.learning_rate,
            "momentum": param_spec.momentum,
            "weight_decay": 0.0 if param_spec.weight_decay is None else param_spec.weight_decay,
        }
        lr_test = None
        stages = []
        if c.search_learning_rate:
            lr_test = self.lr_range_test(model_size, chosen["momentum"], chosen["weight_decay"])
            chosen["learning_rate"] = lr_test.learning_rate
            refine = c.refine_factors()
            if refine:
                # The rule's pick and its neighbours, trained like the candidates (the trial at
                # the pick itself is the weight_decay stage's default trial: journaled once).
                factors = sorted({1.0, *refine})
                stage = self.candidate_stage("learning_rate", [lr_test.learning_rate * f for f in factors], chosen)
                chosen["learning_rate"] = stage.value
                stages.append(stage)
        elif "learning_rate" in param_list_spec:
            stage = self.candidate_stage("learning_rate", param_list_spec.candidates("learning_rate"), chosen)
            chosen["learning_rate"] = stage.value
            stages.append(stage)
        for name in ("weight_decay", "momentum"):
            if name in param_list_spec:
                stage = self.candidate_stage(name, param_list_spec.candidates(name), chosen, getattr(param_spec, name))
                chosen[name] = stage.value
                chosen["learning_rate"] = stage.learning_rates[stage.chosen]
                stages.append(stage)
        ladder = next((stage for stage in stages if stage.name == "learning_rate"), None)
        # A learning rate the user fixed (no range test, no list) is theirs: no correction.
        horizon = self.horizon(chosen["learning_rate"], ladder) if lr_test or ladder else None
        if horizon is not None:
            chosen["learning_rate"] *= horizon.factor
        result_spec = param_spec.replace(**{k: v for k, v in chosen.items() if v is not None})
        return SearchResult(result_spec, c.metric_name, c.by_acc, model_size, lr_test, tuple(stages),
                            self._trials_run, self._trials_reused, self._steps_spent,
                            time.perf_counter() - started, horizon)


def _run_trial(source: tuple[str, Any, bool], trial: TrialSpec) -> Curve:
    """One trial in a worker: ``source`` is (token, trainer or factory, is_factory); the
    trainer is built once per worker process and selector (`worker_cache`)."""
    token, trainer, is_factory = source
    held = worker_cache(__name__, token, lambda: trainer() if is_factory else trainer)
    return held.run(trial)


def coupled_learning_rate(learning_rate: float, momentum: float | None, new_momentum: float) -> float:
    """The learning rate that keeps ``learning_rate / (1 - momentum)`` when momentum changes."""
    if momentum is None:
        return learning_rate
    return learning_rate * (1.0 - new_momentum) / (1.0 - momentum)


def check_search_specs(param_spec: ParamSpec, param_list_spec: ParamSpec, search_learning_rate: bool) -> None:
    """Raises ValueError when the specs cannot make a search (before any training)."""
    if not isinstance(param_spec, ParamSpec):
        raise TypeError(f"param_spec must be a ParamSpec, got {type(param_spec).__name__}")
    if not isinstance(param_list_spec, ParamSpec):
        raise TypeError(f"param_list_spec must be a ParamSpec, got {type(param_list_spec).__name__}")
    for name in param_spec.names():
        if isinstance(getattr(param_spec, name), tuple):
            raise ValueError(f"param_spec.{name} must be one value, got a list; lists go in param_list_spec")
    if search_learning_rate and "learning_rate" in param_list_spec:
        raise ValueError("param_list_spec.learning_rate is given but search_learning_rate=True: either let the "
                         "range test choose (drop the list) or pass search_learning_rate=False")
    if not search_learning_rate and param_spec.learning_rate is None and "learning_rate" not in param_list_spec:
        raise ValueError("search_learning_rate=False needs param_spec.learning_rate or a learning_rate list")
    if "momentum" in param_list_spec and param_spec.momentum is None:
        # The optimizer reads momentum from param_spec; stages before the momentum stage need a value.
        raise ValueError("param_list_spec.momentum is given: param_spec.momentum must hold the default momentum")
    for name in TRAINING_PARAMS:
        if name in param_list_spec and len(set(param_list_spec.candidates(name))) != len(param_list_spec.candidates(name)):
            raise ValueError(f"param_list_spec.{name} has duplicate candidates: {list(param_list_spec.candidates(name))}")
