"""Combine several detectors, each with its own input, into one score.

Members usually need different inputs: kNN and density take Transformer
embeddings, PyOD may take event-count vectors, the surprise statistics go
through a :class:`~anomaly_ssl.detectors.scalar.ScalarDetector`.  The ensemble
therefore takes its input as a mapping ``{member name: that member's X}``.
Two ways to fit:

* ``EnsembleDetector(members).fit({"knn": emb, "iforest": counts, ...})`` fits
  every member on its input (``member_fit_params`` passes e.g. a
  ``reference_mask`` to one member);
* ``EnsembleDetector(members, fit_members=False).fit()`` uses members fitted
  elsewhere and their ``decision_scores_`` (all on the same training rows).

Each member's scores are normalised with a :class:`~.normalize.ScoreNormalizer`
fitted on that member's *training* scores, then combined by a weighted mean (or
a max); the threshold comes from the combined training scores.
:meth:`EnsembleDetector.contributions` gives each member's share of the
combined score, for explanations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, DataError, ModelError
from .base import BaseDetector
from .normalize import ScoreNormalizer


class EnsembleDetector(BaseDetector):
    """Normalise members on their training scores and combine them.

    Parameters
    ----------
    members : mapping of str to BaseDetector
        Named detectors (use :class:`ScalarDetector` for precomputed scores).
    normalize : {'robust_z', 'rank'}
        Per-member scale (see :mod:`.normalize`).
    combine : {'mean', 'max'}
        Weighted mean of normalised scores, or their maximum (weights unused).
    weights : mapping of str to float, optional
        Member weights for ``combine='mean'``; missing members weigh 1.
    clip : float or None
        Clip robust z-scores to ``[-clip, clip]`` before combining.
    fit_members : bool
        Fit members in :meth:`fit` (else they must already be fitted).
    contamination, threshold, threshold_quantile, threshold_z
        See :class:`~anomaly_ssl.detectors.base.BaseDetector`.

    Attributes
    ----------
    normalizers_ : dict of str to ScoreNormalizer
    member_scores_ : dict of str to ndarray of float64, shape (n_train,)
        Normalised training scores per member.
    """

    def __init__(
        self,
        members: Mapping[str, BaseDetector],
        normalize: Literal["robust_z", "rank"] = "robust_z",
        combine: Literal["mean", "max"] = "mean",
        weights: Mapping[str, float] | None = None,
        clip: float | None = 10.0,
        fit_members: bool = True,
        contamination: float = 0.03,
        threshold: str = "contamination",
        threshold_quantile: float = 0.99,
        threshold_z: float = 3.5,
    ) -> None:
        super().__init__(contamination, threshold, threshold_quantile, threshold_z)
        self.members = members
        self.normalize = normalize
        self.combine = combine
        self.weights = weights
        self.clip = clip
        self.fit_members = fit_members

    # ---------------------------------------------------------------- checks
    def _check_params(self) -> None:
        if not self.members:
            raise ConfigError("EnsembleDetector needs at least one member")
        for name, det in self.members.items():
            if not isinstance(det, BaseDetector):
                raise ConfigError(
                    f"ensemble member {name!r} is a {type(det).__name__}, not a detector; "
                    "wrap precomputed scores in ScalarDetector"
                )
        if self.combine not in ("mean", "max"):
            raise ConfigError(f"ensemble combine must be 'mean' or 'max', got {self.combine!r}")
        weights = dict(self.weights or {})
        unknown = set(weights) - set(self.members)
        if unknown:
            raise ConfigError(f"ensemble weights name {sorted(unknown)}, not members {sorted(self.members)}")
        if any(w < 0 for w in weights.values()) or sum(self._weight(n) for n in self.members) <= 0:
            raise ConfigError(f"ensemble weights must be >= 0 with a positive sum, got {weights}")
        ScoreNormalizer(self.normalize, self.clip)  # validates normalize/clip

    def _weight(self, name: str) -> float:
        return float((self.weights or {}).get(name, 1.0))

    def _validate(self, X: Any, fitting: bool) -> Mapping[str, Any] | None:
        if X is None and fitting and not self.fit_members:
            return None
        if not isinstance(X, Mapping):
            raise DataError(
                f"EnsembleDetector takes a dict {{member name: member input}}, got {type(X).__name__}; "
                f"members: {sorted(self.members)}"
            )
        missing = [name for name in self.members if name not in X]
        if missing and ((fitting and self.fit_members) or not fitting):
            raise DataError(f"ensemble input has no entry for member(s) {missing}; keys given: {sorted(X)}")
        return X

    # ------------------------------------------------------------------- fit
    def fit(
        self,
        X: Mapping[str, Any] | None = None,
        y: Any = None,
        member_fit_params: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> EnsembleDetector:
        """Fit (or collect) the members, their normalisers and the threshold; returns ``self``.

        Parameters
        ----------
        X : mapping of str to member input, optional
            Training input per member (not needed when ``fit_members=False``).
        member_fit_params : mapping of str to dict, optional
            Extra ``fit`` keyword arguments per member (e.g. ``reference_mask``).
        """
        return super().fit(X, y, member_fit_params=member_fit_params)

    def _fit(self, X: Mapping[str, Any] | None, member_fit_params: Mapping | None = None) -> np.ndarray:
        extra = dict(member_fit_params or {})
        unknown = set(extra) - set(self.members)
        if unknown:
            raise ConfigError(
                f"member_fit_params names {sorted(unknown)}, not members {sorted(self.members)}"
            )
        raw: dict[str, np.ndarray] = {}
        for name, det in self.members.items():
            if self.fit_members:
                det.fit(X[name], **dict(extra.get(name, {})))  # type: ignore[index]
            elif not det.is_fitted:
                raise DataError(f"ensemble member {name!r} is not fitted; fit it or use fit_members=True")
            raw[name] = det.decision_scores_
        sizes = {name: len(s) for name, s in raw.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"ensemble members were fitted on different numbers of rows: {sizes}")
        self.normalizers_ = {
            name: ScoreNormalizer(self.normalize, self.clip).fit(s) for name, s in raw.items()
        }
        self.member_scores_ = {name: self.normalizers_[name].transform(s) for name, s in raw.items()}
        return self._combine(self.member_scores_)

    # ---------------------------------------------------------------- score
    def _combine(self, normalised: Mapping[str, np.ndarray]) -> np.ndarray:
        return sum(self._parts(normalised).values()) if self.combine == "mean" else np.max(
            np.stack(list(normalised.values())), axis=0
        )

    def _parts(self, normalised: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.combine == "max":
            return dict(normalised)
        total = sum(self._weight(n) for n in self.members)
        return {name: self._weight(name) / total * z for name, z in normalised.items()}

    def member_scores(self, X: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Normalised score of every member for ``X``, float64 (n,) each."""
        self._check_fitted()
        data = self._validate(X, fitting=False)
        out = {name: self.normalizers_[name].transform(det.decision_function(data[name]))
               for name, det in self.members.items()}
        sizes = {name: len(s) for name, s in out.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"ensemble inputs have different numbers of rows: {sizes}")
        return out

    def _score(self, X: Mapping[str, Any]) -> np.ndarray:
        return self._combine(self.member_scores(X))

    def contributions(self, X: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Each member's share of the combined score, float64 (n,) per member.

        For ``combine='mean'`` these are ``weight / sum(weights) * normalised score``
        and sum to :meth:`decision_function`; for ``'max'`` they are the normalised
        scores, whose maximum is the combined score.
        """
        return self._parts(self.member_scores(X))

    # ----------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        """Nested state: the ensemble's parameters, every member's state, the normalisers."""
        state = super().get_state()
        state["params"] = {k: v for k, v in state["params"].items() if k != "members"}
        state["params"]["weights"] = dict(self.weights or {})
        return state

    def _get_state_arrays(self) -> tuple[dict, dict]:
        arrays = {
            "members": {name: det.get_state() for name, det in self.members.items()},
            "normalizers": {name: norm.get_state() for name, norm in self.normalizers_.items()},
        }
        return arrays, {"member_order": list(self.members)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EnsembleDetector:
        """Rebuild the ensemble and its members from :meth:`get_state` output."""
        from . import detector_from_state

        arrays = state["arrays"]
        order = state["meta"]["member_order"]
        if set(order) != set(arrays["members"]):
            raise ModelError("ensemble state is inconsistent: member list and member states differ")
        members = {name: detector_from_state(arrays["members"][name]) for name in order}
        full = dict(state)
        full["params"] = {**state["params"], "members": members}
        return super().from_state(full)  # type: ignore[return-value]

    def _set_state_arrays(self, arrays: dict, meta: dict) -> None:
        self.normalizers_ = {
            name: ScoreNormalizer.from_state(arrays["normalizers"][name]) for name in meta["member_order"]
        }
        self.member_scores_ = {
            name: self.normalizers_[name].transform(det.decision_scores_)
            for name, det in self.members.items()
        }
