"""Automated and coordinated abuse: scraping bots, order-brushing rings, cart hoarders.

These incidents come as groups of near-identical sessions run by one
operator: a bot farm crawling one category in slices, a ring of fresh
accounts buying and praising one item, scalpers hoarding a scarce product at
its drop.  Some are subtle: a spoofed browser, human pace, a browsing prefix.
"""

from __future__ import annotations

from typing import Any

from .actors import HOME_CDF, Clock, fresh_account, open_session, replay
from .context import DAY, SimContext, start_before
from .core import (
    ADD_TO_CART,
    API_CLIENT,
    CARD_METHODS,
    CHECKOUT,
    CREDIT_CARD,
    DEBIT_CARD,
    DESKTOP_WEB,
    FOREIGN_COUNTRIES,
    HEADLESS_BROWSER,
    LOGIN,
    MAX_THINK_SECONDS,
    MOBILE_WEB,
    PAYMENT_ATTEMPT,
    PAYMENT_EVENTS,
    PAYMENT_SUCCESS,
    PAYPAL,
    REMOVE_FROM_CART,
    REVIEW,
    SEARCH,
    SIGNUP,
    VIEW,
    think,
)
from .normal import browse, login


def scraping_bot(ctx: SimContext, budget: int) -> int:
    """A crawler (or a farm crawling one category in slices): listing pages and item views.

    Regular, fast timing from headless clients and data-centre countries; the
    subtle ones spoof a normal browser, click at human pace and start like a shopper.
    """
    d, log_, cat = ctx.draws, ctx.log, ctx.catalog
    group = log_.new_group()
    n = min(budget, d.randint(3, 8)) if budget >= 3 and d.u() < 0.6 else 1
    subtle = d.u() < 0.35
    device = (
        d.choice((DESKTOP_WEB, MOBILE_WEB))
        if subtle
        else d.choice((HEADLESS_BROWSER, API_CLIENT, DESKTOP_WEB))
    )
    country = d.pick(HOME_CDF) if subtle else d.choice(FOREIGN_COUNTRIES[:3])
    length = d.randint(5, 14) if subtle else d.randint(6, 30)
    page = d.randint(4, 12)
    clock = Clock(d, not subtle, 0.8 + 3.2 * d.u())
    category = cat.sample_category(d)
    items = cat.cat_items[category] or cat.cat_items[cat.nonempty[0]]
    base, offset = ctx.starts.flat(d), d.randint(0, 20)
    for i in range(n):
        user = fresh_account(ctx, new=False)
        open_session(ctx, "scraping_bot", group, user, base + i * 90.0 * d.u(), device, d.token(), country)
        t = browse(ctx, user, 0.0, d.randint(1, 3)) if subtle and d.u() < 0.6 else 0.0
        for k in range(length):
            if k % page == 0:
                log_.add(t, SEARCH, cat=category)
            else:
                log_.add(t, VIEW, item=items[(offset + k) % len(items)])
            t += clock.step(6.0)
        offset += length
    return n


def order_brushing(ctx: SimContext, budget: int) -> int:
    """A ring of fresh accounts buying ONE cheap, obscure item, then reviewing it 5 stars.

    Every account follows the merchant's instructions (same steps, similar
    pace); the reviews come days later in separate sessions.
    """
    d, log_, cat = ctx.draws, ctx.log, ctx.catalog
    group = log_.new_group()
    reviews = ctx.can_write(REVIEW)
    n_acc = min(d.randint(3, 8), max(1, budget // 2)) if reviews else min(d.randint(3, 8), budget)
    n_reviews = min(n_acc, budget - n_acc) if reviews else 0
    target = d.choice(cat.cheap_obscure)
    tcat, price = cat.item_cat_list[target], cat.price_list[target]
    method = d.choice((PAYPAL, CREDIT_CARD, DEBIT_CARD))
    script: list[tuple[int, dict[str, Any]]] = [(SIGNUP, {}) if d.u() < 0.5 else (LOGIN, {})]
    script.append((SEARCH, {"cat": tcat}))
    script += [(VIEW, {"item": cat.sample_item(d, tcat)}) for _ in range(d.randint(0, 3))]
    script += [(VIEW, {"item": target}), (ADD_TO_CART, {"item": target, "qty": 1})]
    pay = {"amount": price, "pay": method}
    script += [(CHECKOUT, pay), (PAYMENT_ATTEMPT, pay), (PAYMENT_SUCCESS, pay)]
    delays = [think(d, 10.0, 0.6) for _ in script]
    lag = DAY * (2.0 + 4.0 * d.u()) if reviews else 0.0
    base = start_before(ctx.starts, d, ctx.starts.span - lag - 4 * 3600.0)
    starts, accounts = [], []
    for i in range(n_acc):
        user = fresh_account(ctx, new=True)
        start = base + i * (120.0 + 1300.0 * d.u())
        card = ctx.users.card[user] if method in CARD_METHODS else -1
        own = [(ev, {**kw, "card": card} if ev in PAYMENT_EVENTS else kw) for ev, kw in script]
        open_session(ctx, "order_brushing", group, user, start)
        replay(ctx, own, delays, 0.15)
        starts.append(start)
        accounts.append(user)
    review_script = [(LOGIN, {}), (VIEW, {"item": target}), (REVIEW, {"item": target, "rating": 5})]
    review_delays = [think(d, 8.0, 0.5) for _ in review_script]
    for user, start in list(zip(accounts, starts))[:n_reviews]:
        rstart = start + lag + 3600.0 * d.u()
        open_session(ctx, "order_brushing", group, user, rstart)
        replay(ctx, review_script, review_delays, 0.2)
    return n_acc + n_reviews


def cart_hoarding(ctx: SimContext, budget: int) -> int:
    """Scalpers at a product drop: many units of scarce items in the cart, held, never paid.

    They re-add the items every few minutes to keep the reservation alive and
    sometimes open the checkout without paying.
    """
    d, log_, cat, users = ctx.draws, ctx.log, ctx.catalog, ctx.users
    group = log_.new_group()
    n = min(budget, d.randint(2, 5)) if budget >= 2 and d.u() < 0.5 else 1
    targets = list(dict.fromkeys(d.choice(cat.scarce_list or cat.expensive) for _ in range(d.randint(1, 3))))
    scripted = d.u() < 0.6
    base = ctx.starts.human(d)
    for i in range(n):
        user = fresh_account(ctx, new=False)
        clock = Clock(d, scripted, 0.5 + 1.5 * d.u(), users.speed[user])
        open_session(ctx, "cart_hoarding", group, user, base + i * 40.0 * d.u())
        t = login(ctx, 0.0, users.speed[user]) if d.u() < 0.5 else 0.0
        if not scripted:
            t = browse(ctx, user, t, d.randint(1, 3))
        cart: dict[int, int] = {}
        for item in targets:
            cart[item] = d.randint(3, 10)
            log_.add(t, VIEW, item=item)
            t += clock.step(6.0)
            log_.add(t, ADD_TO_CART, item=item, qty=cart[item])
            last = t
            t += clock.step(4.0)
        for _ in range(d.randint(1, 4)):
            # wait until the reservation nearly expires (the gap stays below the session gap)
            t = last + min(t - last + 400.0 + 1000.0 * d.u(), MAX_THINK_SECONDS)
            item = d.choice(targets)
            log_.add(t, REMOVE_FROM_CART, item=item, qty=cart[item])
            t += clock.step(3.0)
            log_.add(t, ADD_TO_CART, item=item, qty=cart[item])
            last = t
            t += clock.step(3.0)
        if d.u() < 0.4:
            total = round(sum(cat.price_list[it] * q for it, q in cart.items()), 2)
            log_.add(t, CHECKOUT, amount=total, pay=users.pay[user], card=users.card[user])
    return n


#: type name -> incident generator ``(ctx, budget) -> sessions written``
