"""The search's sampler: TPE, with a random state of its own for each trial number.

One seeded TPE sampler draws from one random stream, so trial n's params depend on how many
draws the trials before it made in *this* process. When trials run on several workers, each with
its own sampler, one stream becomes several and the seed stops meaning anything. Here trial n's
draws come from a TPE sampler seeded with (seed, n), whichever process runs it: what trial n
samples depends on the seed, its number and the finished trials it sees, nothing else. Run one
after the other (locally, or on one Dask worker thread) every trial sees the same history, and
the study is the same trial for trial.

TPE runs with ``constant_liar``: a trial still running elsewhere counts as a bad result where it
is, so that parallel workers do not all sample around the same promising point. With one trial
at a time nothing else is running, and the liar changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s sampler: independent streams for (seed, number) pairs."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededTPE(BaseSampler):
    """TPE whose random state is a function of the study's seed and the trial's number."""

    def __init__(self, seed: int) -> None:
        """Seeded with ``seed``; each trial gets its own TPE sampler in ``before_trial``."""
        self.seed = seed
        self._tpe = self._for(0)

    def _for(self, number: int) -> TPESampler:
        return TPESampler(seed=trial_seed(self.seed, number), constant_liar=True)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """A new TPE sampler, seeded for this trial's number."""
        self._tpe = self._for(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """As TPE does."""
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """As TPE does."""
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """As TPE does, from this trial's random state."""
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """As TPE does."""
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing: the random state is the seed's and the trial number's by design."""


def pruner() -> optuna.pruners.BasePruner:
    """The median pruner: a trial worse than the median at a fold, after 5 trials, stops."""
    return optuna.pruners.MedianPruner(n_startup_trials=5)
