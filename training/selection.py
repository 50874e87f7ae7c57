"""Active-learning query strategies over a model's (n, 3) probability matrix."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty

from training.errors import TrainingError

__all__ = ["STRATEGIES", "cold_start", "duplicate_key", "select", "top_k", "utility"]

STRATEGIES = ("random", "least_confidence", "margin", "entropy", "diverse", "badge")
#: Strategies that need the candidates' embeddings.
NEEDS_EMBEDDINGS = frozenset({"diverse", "badge"})


def _check_k(k: int) -> None:
    if k < 0:
        raise TrainingError(f"k must be non-negative, got {k}")


def top_k(utility: npt.ArrayLike, k: int, *, largest: bool = True) -> npt.NDArray[np.int64]:
    """Indices of the ``k`` best entries of a 1-D ``utility``, best first.

    Best means largest (or smallest with ``largest=False``); ties go to the lower index,
    and NaN counts as the worst possible value. Returns ``min(k, n)`` distinct indices.
    O(n + k log k): ``argpartition`` finds the k-th best value, then only the entries at
    least that good are sorted (the top 1,000 of 1,000,000 take ~10 ms).
    """
    _check_k(k)
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
    arr = _probs(probs)
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


def _probs(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise TrainingError(f"expected a 2-D probability matrix, got shape {arr.shape}")
    return arr


def select(
    strategy: str,
    probs: npt.ArrayLike,
    k: int,
    *,
    embeddings: npt.ArrayLike | None = None,
    duplicate_keys: Sequence[str] | None = None,
    duplicate_embeddings: npt.ArrayLike | None = None,
    class_balance: bool = False,
    labelled_counts: Sequence[int] | None = None,
    prefilter: int = 5,
    duplicate_cosine: float = 0.95,
    seed: int = 0,
) -> npt.NDArray[np.int64]:
    """Row indices of the ``k`` chats to label, most informative first.

    ``strategy``: random, least_confidence, margin, entropy, diverse (the ``prefilter``
    x k smallest-margin rows clustered by k-means over ``embeddings``, one chat per
    cluster, so a batch is not k variants of one complaint), or badge (k-means++ seeding
    over gradient embeddings, Ash et al. 2020: uncertain and mutually distant chats).
    Within a batch no two chats share a ``duplicate_keys`` entry or have
    ``duplicate_embeddings`` closer than ``duplicate_cosine``: unit sentence embeddings
    from a model trained for similarity (the base model), not the fine-tuned model's
    ``embeddings``, which put up to a third of same-class chat pairs above cosine 0.95 and
    would thin out the majority class. ``class_balance`` reserves half the batch for the C
    predicted classes, so a class the model rarely predicts still reaches the annotators:
    evenly, or, given the ``labelled_counts`` per class so far, in proportion to how far
    each class is below an even share of the labels. Ties go to the lower row index; the
    result has ``min(k, n)`` distinct indices when enough distinct chats exist.
    """
    _check_k(k)
    arr = _probs(probs)
    n = arr.shape[0]
    emb = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)
    if emb is not None and emb.shape[0] != n:
        raise TrainingError(f"{emb.shape[0]} embeddings for {n} probability rows")
    dup = None if duplicate_embeddings is None else np.asarray(duplicate_embeddings, np.float32)
    if dup is not None and dup.shape[0] != n:
        raise TrainingError(f"{dup.shape[0]} duplicate embeddings for {n} probability rows")
    if duplicate_keys is not None and len(duplicate_keys) != n:
        raise TrainingError(f"{len(duplicate_keys)} duplicate keys for {n} probability rows")
    if labelled_counts is not None and len(labelled_counts) != arr.shape[1]:
        raise TrainingError(f"{len(labelled_counts)} labelled counts for {arr.shape[1]} classes")
    if strategy not in STRATEGIES:
        raise TrainingError(
            f"unknown query strategy {strategy!r}: the setting SENTILOOP_STRATEGY must be "
            f"one of {list(STRATEGIES)}"
        )
    if k == 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    quotas = _quotas(k, arr.shape[1], class_balance, labelled_counts)
    if strategy in NEEDS_EMBEDDINGS and emb is None:
        raise TrainingError(f"the {strategy} strategy needs embeddings of the candidates")
    if strategy == "random":
        ranked = np.random.default_rng(seed).permutation(n).astype(np.int64)
    elif strategy == "diverse" and emb is not None:
        ranked = _diverse(utility(strategy, arr), emb, k, prefilter, seed)
    elif strategy == "badge" and emb is not None:
        ranked = _badge(arr, emb, k, seed)
    else:
        util = utility(strategy, arr)
        # rank a margin beyond k first (top-k of a million rows is cheap, a full sort not);
        # reserved places need each class's best, which may all lie beyond that margin
        ranked = top_k(util, n if any(quotas) else min(n, 4 * k + 64))
        picked = _fill(ranked, k, arr, dup, duplicate_keys, quotas, duplicate_cosine)
        if len(picked) == min(k, n) or len(ranked) == n:
            return picked
        ranked = top_k(util, n)
    return _fill(ranked, k, arr, dup, duplicate_keys, quotas, duplicate_cosine)


def _quotas(
    k: int, classes: int, class_balance: bool, labelled_counts: Sequence[int] | None
) -> list[int]:
    """Places in a batch of k reserved per predicted class: half the batch, split evenly
    or by each class's shortfall from an even share of labels (largest remainder)."""
    if not class_balance:
        return [0] * classes
    if labelled_counts is None:
        return [-(-k // (2 * classes))] * classes
    counts = np.asarray(labelled_counts, dtype=np.float64)
    if (counts < 0).any():
        raise TrainingError(f"labelled counts must be non-negative, got {list(labelled_counts)}")
    reserve = k // 2
    deficit = np.maximum(0.0, (counts.sum() + k) / classes - counts)
    if reserve == 0 or deficit.sum() == 0:
        return [0] * classes
    exact = reserve * deficit / deficit.sum()
    quotas = np.floor(exact).astype(int)
    for c in np.argsort(-(exact - quotas), kind="stable")[: reserve - int(quotas.sum())]:
        quotas[c] += 1
    return [int(q) for q in quotas]


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


def _fill(
    ranked: npt.NDArray[np.int64],
    k: int,
    probs: npt.NDArray[np.float64],
    emb: npt.NDArray[np.float32] | None,
    keys: Sequence[str] | None,
    quotas: Sequence[int],
    max_cosine: float,
) -> npt.NDArray[np.int64]:
    """Take rows in rank order, skipping near-duplicates of rows already taken, after
    first filling each predicted class's reserved places (``quotas``)."""
    predicted = probs.argmax(axis=1)
    chosen: list[int] = []
    seen_keys: set[str] = set()
    vectors: list[npt.NDArray[np.float32]] = []

    def take(i: int) -> bool:
        if keys is not None and keys[i] in seen_keys:
            return False
        if emb is not None and vectors and float(np.max(np.stack(vectors) @ emb[i])) >= max_cosine:
            return False
        chosen.append(i)
        if keys is not None:
            seen_keys.add(keys[i])
        if emb is not None:
            vectors.append(emb[i])
        return True

    for c, quota in enumerate(quotas):
        got = 0
        for i in ranked[predicted[ranked] == c]:
            if got >= quota or len(chosen) >= k:
                break
            got += take(int(i))
    taken = set(chosen)
    for i in ranked:
        if len(chosen) >= k:
            break
        if int(i) not in taken and take(int(i)):
            taken.add(int(i))
    rank = {int(i): r for r, i in enumerate(ranked)}
    return np.asarray(sorted(chosen, key=rank.__getitem__), dtype=np.int64)


def cold_start(
    n: int, k: int, *, embeddings: npt.ArrayLike | None = None, seed: int = 0
) -> npt.NDArray[np.int64]:
    """First batch to label before any model exists: ``min(k, n)`` distinct indices.

    With ``embeddings`` (n rows, e.g. from the base model) the batch covers the pool: the
    chat nearest each of k k-means centroids, so the first labels span the kinds of chats
    there are; without them, a random sample.
    """
    _check_k(k)
    if n < 0:
        raise TrainingError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    if embeddings is None or k >= n:
        return rng.choice(n, size=min(k, n), replace=False).astype(np.int64)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.shape[0] != n:
        raise TrainingError(f"{emb.shape[0]} embeddings for a pool of {n}")
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=50).fit(emb)
    centers = model.cluster_centers_
    dist = (centers**2).sum(1)[None, :] - 2 * (emb @ centers.T)  # squared distance - |e|^2
    picked: list[int] = []
    used: set[int] = set()
    for c in range(k):
        for i in np.argsort(dist[:, c], kind="stable"):
            if int(i) not in used:
                picked.append(int(i))
                used.add(int(i))
                break
    return np.asarray(picked, dtype=np.int64)


_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def duplicate_key(text: str) -> str:
    """A text with case, @mentions, links, digits and punctuation removed: retweets and
    templated complaints that differ only there get the same key."""
    t = _URL.sub(" ", text.lower())
    t = _MENTION.sub(" ", t)
    t = re.sub(r"\d+", "0", t)
    return _NON_WORD.sub(" ", t).strip()
