"""The shop's catalogue: items, categories, prices and Zipf popularity.

Items belong to categories grouped into departments; each category has a
log-normal price distribution (median and spread set by its department) and
its items follow a Zipf popularity law (a few best-sellers, a long tail).  A
:class:`Catalog` can also be built from a real event table's items, with the
observed interaction counts as popularity, so the anomaly library can inject
sessions into real data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from .core import Draws, cumulative

#: department -> (share of traffic, median price, log-price sigma, return rate, categories)
DEPARTMENTS: dict[str, tuple[float, float, float, float, tuple[str, ...]]] = {
    "electronics": (0.14, 110.0, 1.0, 0.07, ("phones", "laptops", "audio", "accessories", "gaming")),
    "fashion": (0.22, 35.0, 0.6, 0.26, ("women", "men", "kids", "outerwear")),
    "shoes": (0.09, 70.0, 0.5, 0.20, ("sneakers", "boots", "sandals")),
    "home": (0.12, 40.0, 0.9, 0.06, ("kitchen", "furniture", "decor", "bedding")),
    "beauty": (0.10, 18.0, 0.6, 0.04, ("skincare", "makeup", "fragrance")),
    "books": (0.06, 14.0, 0.4, 0.03, ("fiction", "nonfiction", "children")),
    "toys": (0.07, 25.0, 0.7, 0.05, ("lego", "games", "dolls")),
    "sports": (0.08, 45.0, 0.8, 0.08, ("fitness", "outdoor", "cycling")),
    "grocery": (0.08, 6.0, 0.5, 0.01, ("snacks", "drinks", "coffee")),
    "jewelry": (0.04, 90.0, 1.0, 0.10, ("watches", "rings", "necklaces")),
}
#: categories whose best-sellers are scarce (limited editions, consoles): scalping targets
SCARCE_CATEGORIES = frozenset({"electronics/phones", "electronics/gaming", "shoes/sneakers", "toys/lego"})
#: Zipf exponent of item popularity within a category
ZIPF_EXPONENT = 1.0


@dataclass
class Catalog:
    """Items with categories, prices and popularity.

    Attributes
    ----------
    item_labels : polars.Series
        Item id of each item index, as written to the output (any dtype).
    category_labels : polars.Series
        Category name/id of each category index.
    item_cat : numpy.ndarray
        ``(n_items,)`` int64, category index of each item.
    price : numpy.ndarray
        ``(n_items,)`` float64, unit price of each item.
    popularity : numpy.ndarray
        ``(n_items,)`` float64, share of views each item gets (sums to 1).
    return_rate : numpy.ndarray
        ``(n_categories,)`` float64, base probability an ordered item is returned.
    scarce : numpy.ndarray
        int64 indices of scarce, popular items (scalping targets).
    """

    item_labels: pl.Series
    category_labels: pl.Series
    item_cat: np.ndarray
    price: np.ndarray
    popularity: np.ndarray
    return_rate: np.ndarray
    scarce: np.ndarray

    def __post_init__(self) -> None:
        n_cat = len(self.category_labels)
        cat_pop = np.bincount(self.item_cat, weights=self.popularity, minlength=n_cat)
        #: categories drawn by traffic share
        self.category_cdf = cumulative(cat_pop + 1e-12)
        order = np.lexsort((-self.popularity, self.item_cat))  # by category, most popular first
        bounds = np.searchsorted(self.item_cat[order], np.arange(n_cat + 1))
        self.cat_items: list[list[int]] = []
        self.cat_cdf: list[list[float]] = []
        for c in range(n_cat):
            items = order[bounds[c] : bounds[c + 1]]
            self.cat_items.append(items.tolist())
            self.cat_cdf.append(cumulative(self.popularity[items] + 1e-12) if len(items) else [])
        self.price_list: list[float] = self.price.tolist()
        self.item_cat_list: list[int] = self.item_cat.tolist()
        self.nonempty = [c for c in range(n_cat) if self.cat_items[c]]
        # expensive: top 5 % by price; cheap & obscure: bottom third by price and popularity
        self.expensive: list[int] = np.flatnonzero(self.price >= np.quantile(self.price, 0.95)).tolist()
        cheap = (self.price <= np.quantile(self.price, 0.33)) & (
            self.popularity <= np.quantile(self.popularity, 0.5)
        )
        self.cheap_obscure: list[int] = np.flatnonzero(cheap).tolist() or np.argsort(self.price)[:10].tolist()
        self.cheapest: list[int] = np.argsort(self.price, kind="stable")[
            : max(5, len(self.price) // 50)
        ].tolist()
        self.scarce_list: list[int] = self.scarce.tolist()

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.price)

    @property
    def n_categories(self) -> int:
        """Number of categories."""
        return len(self.category_labels)

    def sample_category(self, draws: Draws) -> int:
        """A category drawn by traffic share."""
        return draws.pick(self.category_cdf)

    def sample_item(self, draws: Draws, category: int) -> int:
        """An item of ``category`` drawn by (Zipf) popularity."""
        items = self.cat_items[category]
        if not items:
            category = draws.choice(self.nonempty)
            items = self.cat_items[category]
        return items[draws.pick(self.cat_cdf[category])]

    @classmethod
    def from_items(
        cls,
        item_labels: pl.Series,
        item_cat: np.ndarray,
        category_labels: pl.Series,
        counts: np.ndarray,
        rng: np.random.Generator,
    ) -> Catalog:
        """Build a catalogue from real items (e.g. those of an event table).

        Parameters
        ----------
        item_labels : polars.Series
            Item ids, one per item.
        item_cat : numpy.ndarray
            ``(n_items,)`` int, category index of each item.
        category_labels : polars.Series
            Category ids, one per category index.
        counts : numpy.ndarray
            ``(n_items,)`` interaction counts, used as popularity.
        rng : numpy.random.Generator
            For the synthetic prices (real click logs often have none).
        """
        n_cat = len(category_labels)
        medians = np.exp(rng.normal(np.log(35.0), 0.8, n_cat))
        price = np.round(medians[item_cat] * np.exp(rng.normal(0.0, 0.6, len(item_cat))), 2)
        price = np.maximum(price, 0.5)
        popularity = counts.astype(np.float64) / counts.sum()
        scarce = np.argsort(-popularity, kind="stable")[: max(3, len(popularity) // 200)]
        return cls(
            item_labels=item_labels,
            category_labels=category_labels,
            item_cat=np.asarray(item_cat, dtype=np.int64),
            price=price,
            popularity=popularity,
            return_rate=np.full(n_cat, 0.08),
            scarce=np.sort(scarce),
        )


def make_catalog(n_items: int, rng: np.random.Generator) -> Catalog:
    """Generate a synthetic catalogue of about ``n_items`` items.

    Parameters
    ----------
    n_items : int
        Number of items (>= number of categories).
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    Catalog
        Item ids ``p`` + 7 digits, categories ``department/name``.
    """
    names: list[str] = []
    shares: list[float] = []
    medians: list[float] = []
    sigmas: list[float] = []
    returns: list[float] = []
    for dept, (share, median, sigma, ret, cats) in DEPARTMENTS.items():
        split = rng.dirichlet(np.full(len(cats), 4.0))
        for name, s in zip(cats, split):
            names.append(f"{dept}/{name}")
            shares.append(share * s)
            medians.append(median * float(np.exp(rng.normal(0.0, 0.3))))
            sigmas.append(sigma)
            returns.append(ret)
    n_cat = len(names)
    share = np.asarray(shares) / np.sum(shares)
    per_cat = np.maximum(1, np.round(share * max(n_items, n_cat)).astype(np.int64))
    item_cat = np.repeat(np.arange(n_cat), per_cat)
    n = len(item_cat)
    price = np.exp(
        np.log(np.asarray(medians))[item_cat] + np.asarray(sigmas)[item_cat] * rng.standard_normal(n)
    )
    # shops like x.99 prices: round 40 % of the items that way
    price = np.where(rng.random(n) < 0.4, np.floor(price) + 0.99, np.round(np.maximum(price, 0.49), 2))
    popularity = np.empty(n)
    scarce: list[int] = []
    start = 0
    for c in range(n_cat):
        k = int(per_cat[c])
        ranks = rng.permutation(k) + 1
        zipf = ranks.astype(np.float64) ** -ZIPF_EXPONENT
        popularity[start : start + k] = share[c] * zipf / zipf.sum()
        if names[c] in SCARCE_CATEGORIES:
            scarce.extend((start + np.flatnonzero(ranks <= 3)).tolist())
        start += k
    ids = rng.choice(9_000_000, size=n, replace=False) + 1_000_000
    return Catalog(
        item_labels=pl.Series("item_id", [f"p{i}" for i in ids.tolist()], dtype=pl.Utf8),
        category_labels=pl.Series("category", names, dtype=pl.Utf8),
        item_cat=item_cat,
        price=price,
        popularity=popularity / popularity.sum(),
        return_rate=np.asarray(returns),
        scarce=np.asarray(sorted(scarce), dtype=np.int64),
    )
