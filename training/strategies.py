"""Query strategies behind one small protocol: each ranks the candidates, most informative
first. ``training.selection.select`` turns a ranking into a batch (class balance, near
duplicates); adding a strategy is a class here and its name in ``domain.STRATEGIES``."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty

from domain import STRATEGIES
from training.errors import TrainingError

__all__ = [
    "NEEDS_EMBEDDINGS",
    "QueryStrategy",
    "as_probs",
    "check_k",
    "strategy",
    "top_k",
    "utility",
]


class QueryStrategy(Protocol):
    """Ranks candidate rows by how much labelling them should teach the model."""

    name: str
    needs_embeddings: bool

    def rank(
        self,
        probs: npt.NDArray[np.float64],
        embeddings: npt.NDArray[np.float32] | None,
        k: int,
        *,
        limit: int,
        prefilter: int,
        seed: int,
    ) -> npt.NDArray[np.int64]:
        """Row indices, best first: at least the best ``limit`` of them (or all rows)."""
        ...


def check_k(k: int) -> None:
    if k < 0:
        raise TrainingError(f"k must be non-negative, got {k}")


def top_k(utility: npt.ArrayLike, k: int, *, largest: bool = True) -> npt.NDArray[np.int64]:
    """Indices of the ``k`` best entries of a 1-D ``utility``, best first.

    Best means largest (or smallest with ``largest=False``); ties go to the lower index,
    and NaN counts as the worst possible value. Returns ``min(k, n)`` distinct indices.
    O(n + k log k): ``argpartition`` finds the k-th best value, then only the entries at
    least that good are sorted (the top 1,000 of 1,000,000 take ~10 ms).
    """
    check_k(k)
    arr = np.asarray(utility, dtype=np.float64)
    if arr.ndim != 1:
        raise TrainingError(f"expected a 1-D utility vector, got shape {arr.shape}")
    n = arr.shape[0]
    take = min(k, n)
    if take == 0:
        return np.zeros(0, dtype=np.int64)
    key = -arr if largest else arr.copy()  # ascending key: smaller is better
    key[np.isnan(key)] = np.inf
    if take < n:
        kth = key[np.argpartition(key, take - 1)[take - 1]]
        better = np.flatnonzero(key < kth)
        tied = np.flatnonzero(key == kth)[: take - better.size]  # lowest indices win ties
        candidates = np.concatenate((better, tied))
    else:
        candidates = np.arange(n)
    # lexsort: the last key is primary (utility), ties by index.
    order = np.lexsort((candidates, key[candidates]))
    result: npt.NDArray[np.int64] = candidates[order].astype(np.int64)
    return result


def utility(strategy: str, probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """How informative each row is under an uncertainty strategy (larger = more), from
    modAL's implementations on the probability matrix."""
    arr = as_probs(probs)
    if strategy == "least_confidence":
        return np.asarray(_proba_uncertainty(arr), dtype=np.float64)
    if strategy in ("margin", "diverse"):  # small margin = unsure
        return -np.asarray(_proba_margin(arr), dtype=np.float64)
    if strategy == "entropy":
        return np.asarray(_proba_entropy(arr), dtype=np.float64)
    if strategy == "badge":  # squared length of p - onehot(argmax p): the gradient's scale
        return np.asarray((_residual(arr) ** 2).sum(axis=1), dtype=np.float64)
    raise TrainingError(f"{strategy!r} has no uncertainty utility")


def _residual(probs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """p - onehot(argmax p): the output-layer loss gradient if the model's guess were right."""
    residual = probs.copy()
    residual[np.arange(len(probs)), probs.argmax(axis=1)] -= 1.0
    return residual


def as_probs(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise TrainingError(f"expected a 2-D probability matrix, got shape {arr.shape}")
    return arr


class Random:
    """A random order: the baseline every other strategy must beat."""

    name, needs_embeddings = "random", False

    def rank(
        self,
        probs: npt.NDArray[np.float64],
        embeddings: npt.NDArray[np.float32] | None,
        k: int,
        *,
        limit: int,
        prefilter: int,
        seed: int,
    ) -> npt.NDArray[np.int64]:
        return np.random.default_rng(seed).permutation(len(probs)).astype(np.int64)


class Uncertainty:
    """Least confidence, smallest margin or largest entropy first (modAL's measures). Only a
    margin beyond k is ranked (top-k of a million rows is cheap, a full sort is not)."""

    needs_embeddings = False

    def __init__(self, name: str) -> None:
        self.name = name

    def rank(
        self,
        probs: npt.NDArray[np.float64],
        embeddings: npt.NDArray[np.float32] | None,
        k: int,
        *,
        limit: int,
        prefilter: int,
        seed: int,
    ) -> npt.NDArray[np.int64]:
        return top_k(utility(self.name, probs), limit)


class Diverse:
    """The ``prefilter`` x k least sure rows clustered by k-means over their embeddings, one
    chat per cluster, so a batch is not k variants of one complaint."""

    name, needs_embeddings = "diverse", True

    def rank(
        self,
        probs: npt.NDArray[np.float64],
        embeddings: npt.NDArray[np.float32] | None,
        k: int,
        *,
        limit: int,
        prefilter: int,
        seed: int,
    ) -> npt.NDArray[np.int64]:
        return _diverse(utility(self.name, probs), _needs(self, embeddings), k, prefilter, seed)


class Badge:
    """BADGE (Ash et al. 2020): k-means++ seeding over gradient embeddings, so the picks are
    both uncertain and far apart."""

    name, needs_embeddings = "badge", True

    def rank(
        self,
        probs: npt.NDArray[np.float64],
        embeddings: npt.NDArray[np.float32] | None,
        k: int,
        *,
        limit: int,
        prefilter: int,
        seed: int,
    ) -> npt.NDArray[np.int64]:
        return _badge(probs, _needs(self, embeddings), k, seed)


def _needs(s: QueryStrategy, embeddings: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
    if embeddings is None:
        raise TrainingError(f"the {s.name} strategy needs embeddings of the candidates")
    return embeddings


_BY_NAME: dict[str, QueryStrategy] = {
    s.name: s
    for s in (
        Random(),
        Uncertainty("least_confidence"),
        Uncertainty("margin"),
        Uncertainty("entropy"),
        Diverse(),
        Badge(),
    )
}
assert tuple(_BY_NAME) == STRATEGIES, "domain.STRATEGIES and the implementations disagree"

#: Strategies that need the candidates' embeddings.
NEEDS_EMBEDDINGS = frozenset(name for name, s in _BY_NAME.items() if s.needs_embeddings)


def strategy(name: str) -> QueryStrategy:
    """The strategy called ``name``; an unknown one names the setting that chose it."""
    if name not in _BY_NAME:
        raise TrainingError(
            f"unknown query strategy {name!r}: the setting SENTILOOP_STRATEGY must be "
            f"one of {list(STRATEGIES)}"
        )
    return _BY_NAME[name]


def _diverse(
    util: npt.NDArray[np.float64],
    emb: npt.NDArray[np.float32],
    k: int,
    prefilter: int,
    seed: int,
) -> npt.NDArray[np.int64]:
    """The most uncertain member of each of k clusters of the most uncertain rows, ranked
    by their uncertainty; then the rest of the rows by uncertainty, as fallbacks."""
    pool = top_k(util, max(k * prefilter, k))
    clusters = min(k, len(pool))
    labels = _kmeans(emb[pool], clusters, seed)
    picks = []
    for c in range(clusters):
        members = pool[labels == c]
        if members.size:
            picks.append(members[np.argmax(util[members])])
    picks_arr = np.asarray(picks, dtype=np.int64)
    picks_arr = picks_arr[np.lexsort((picks_arr, -util[picks_arr]))]
    rest = top_k(util, len(util))
    rest = rest[~np.isin(rest, picks_arr)]
    return np.concatenate((picks_arr, rest))


def _badge(
    probs: npt.NDArray[np.float64], emb: npt.NDArray[np.float32], k: int, seed: int
) -> npt.NDArray[np.int64]:
    """BADGE: the loss gradient each chat would give the output layer if the model's own
    guess were its label, (p - onehot(argmax p)) x embedding, seeded by k-means++. A long
    gradient means an unsure prediction; k-means++ keeps the picks apart. The first pick
    is the longest gradient; rows never drawn follow by gradient length, as fallbacks."""
    n = len(probs)
    grad = (_residual(probs)[:, :, None] * emb[:, None, :].astype(np.float64)).reshape(n, -1)
    norms = (grad**2).sum(axis=1)
    rng = np.random.default_rng(seed)
    first = int(top_k(norms, 1)[0])
    picks = [first]
    nearest = ((grad - grad[first]) ** 2).sum(axis=1)
    while len(picks) < min(2 * k, n):
        total = nearest.sum()
        if total <= 1e-12:  # the rest coincide with a pick: no more diversity to gain
            break
        i = int(rng.choice(n, p=nearest / total))
        picks.append(i)
        nearest = np.minimum(nearest, ((grad - grad[i]) ** 2).sum(axis=1))
    picks_arr = np.asarray(picks, dtype=np.int64)
    rest = top_k(norms, n)
    return np.concatenate((picks_arr, rest[~np.isin(rest, picks_arr)]))


def _kmeans(x: npt.NDArray[np.float32], k: int, seed: int) -> npt.NDArray[np.int64]:
    from sklearn.cluster import KMeans

    if k >= len(x):
        return np.arange(len(x), dtype=np.int64)
    model = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=50)
    return np.asarray(model.fit_predict(x), dtype=np.int64)
