"""A realistic online-shop simulator with labelled, injectable anomalies.

:func:`simulate_shop` generates shoppers' click-streams (search, view, cart,
checkout, payment, reviews, returns, ...) over days with a daily rhythm, plus
labelled anomalous sessions of seven kinds (scraping bots, order brushing,
card testing, account takeover, returns abuse, coupon abuse, cart hoarding),
several of them as coordinated groups.  :func:`inject_anomalies` adds the same
synthetic anomalies to a real event table.  The labels name the sequence ids
the data layer produces under ``configs/shop.yaml``; normal sequences have
``anomaly_type == "normal"``.
"""

from __future__ import annotations

from .core import ANOMALY_TYPES, EVENTS, NORMAL_TYPE
from .inject import TAOBAO_COLUMNS, TAOBAO_EVENT_MAP, InjectedData, inject_anomalies
from .shop import SimulatedShop, label_sequences, simulate_shop

__all__ = [
    "ANOMALY_TYPES",
    "EVENTS",
    "NORMAL_TYPE",
    "TAOBAO_COLUMNS",
    "TAOBAO_EVENT_MAP",
    "InjectedData",
    "SimulatedShop",
    "inject_anomalies",
    "label_sequences",
    "simulate_shop",
]
