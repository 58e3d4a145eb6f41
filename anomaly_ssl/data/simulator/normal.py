"""Normal shopper sessions: browsing, the purchase funnel, and later follow-ups.

A session may start with a login (rare in the apps, which stay logged in;
always on a new device) or a signup for a new account.  The shopper then
searches and views items of a favourite category (Zipf popularity, revisits),
adds some to the cart, occasionally removes one or wishlists one, and with a
probability that depends on intent and on the user goes to checkout, maybe with
a coupon, and pays; a failed payment is retried once, sometimes with a new
card.  Every step loses shoppers, so views > carts > checkouts > orders.
Orders plan follow-up sessions days later: reviews and returns (more for
fashion and shoes).  Think times are log-normal, scaled by the user's speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .context import SimContext
from .core import (
    ADD_PAYMENT_METHOD,
    ADD_TO_CART,
    ADDRESS_CHANGE,
    APP_DEVICES,
    APPLY_COUPON,
    CARD_METHODS,
    CHECKOUT,
    COUPON_REJECTED,
    CREDIT_CARD,
    EXPIRED_COUPON,
    FOREIGN_COUNTRIES,
    GENUINE_COUPONS,
    LOGIN,
    LOGIN_FAILED,
    LOGOUT,
    PASSWORD_CHANGE,
    PAYMENT_ATTEMPT,
    PAYMENT_FAILED,
    PAYMENT_METHODS,
    PAYMENT_SUCCESS,
    REMOVE_FROM_CART,
    RETURN_REQUEST,
    REVIEW,
    SEARCH,
    SIGNUP,
    VIEW,
    WISHLIST,
    cumulative,
    think,
)

#: discount of each genuine coupon (index into GENUINE_COUPONS order)
COUPON_DISCOUNT = {0: 0.10, 1: 0.15, 2: 0.05, 3: 0.20, 4: 0.05, 6: 0.40}
#: 1..5 star ratings of genuine reviews
RATING_CDF = cumulative((0.08, 0.05, 0.09, 0.23, 0.55))
_QTY_CDF = cumulative((0.86, 0.1, 0.04))


@dataclass
class FollowUp:
    """A later session planned by an order: a review or a return."""

    user: int
    start: float
    kind: int  # REVIEW or RETURN_REQUEST
    items: list[tuple[int, int]]  # (item, quantity)


def login(ctx: SimContext, t: float, speed: float, fail_prob: float = 0.04) -> float:
    """Write a login (after a mistyped password now and then); return the new time."""
    d, log = ctx.draws, ctx.log
    if d.u() < fail_prob:
        log.add(t, LOGIN_FAILED)
        t += think(d, 9.0 * speed, 0.6)
    log.add(t, LOGIN)
    return t + think(d, 5.0 * speed, 0.7)


def browse(
    ctx: SimContext,
    user: int,
    t: float,
    n_views: int,
    cart_prob: float = 0.0,
    cart: dict[int, int] | None = None,
) -> float:
    """Search and view ``n_views`` items, adding some to ``cart``; return the new time.

    With ``cart_prob=0`` this is pure browsing (also used as the human-looking
    prefix of subtle anomalies).
    """
    d, log, cat, users = ctx.draws, ctx.log, ctx.catalog, ctx.users
    speed = users.speed[user]
    category = users.pick_category(user, d, cat)
    recent: list[int] = []
    for k in range(n_views):
        if (k == 0 and d.u() < 0.55) or d.u() < 0.16:
            if k > 0 and d.u() < 0.35:
                category = users.pick_category(user, d, cat)
            log.add(t, SEARCH, cat=category)
            t += think(d, 9.0 * speed, 0.7)
        if recent and d.u() < 0.12:
            item = d.choice(recent)
        else:
            item = cat.sample_item(d, category)
            recent.append(item)
        log.add(t, VIEW, item=item)
        t += think(d, 22.0 * speed, 1.0)
        r = d.u()
        if cart is not None and r < cart_prob:
            qty = d.pick(_QTY_CDF) + 1
            log.add(t, ADD_TO_CART, item=item, qty=qty)
            cart[item] = cart.get(item, 0) + qty
            t += think(d, 7.0 * speed, 0.7)
            if len(cart) > 1 and d.u() < 0.1:
                drop = next(iter(cart))
                log.add(t, REMOVE_FROM_CART, item=drop, qty=cart.pop(drop))
                t += think(d, 6.0 * speed, 0.7)
        elif r < cart_prob + 0.025:
            log.add(t, WISHLIST, item=item)
            t += think(d, 5.0 * speed, 0.6)
    return t


def pay(ctx: SimContext, user: int, t: float, cart: dict[int, int], new_account: bool) -> tuple[float, bool]:
    """Checkout and payment of ``cart``; return ``(time, ordered)``.

    Drop-off: some abandon at checkout, some payments fail; a failed payment
    is retried once (a third of the time with a newly added card).
    """
    d, log, users = ctx.draws, ctx.log, ctx.users
    speed = users.speed[user]
    total = sum(ctx.catalog.price_list[i] * q for i, q in cart.items())
    if d.u() < (0.5 if new_account else users.coupon_prop[user]):
        code = GENUINE_COUPONS[0] if new_account else d.choice((*GENUINE_COUPONS, EXPIRED_COUPON))
        log.add(t, APPLY_COUPON, coupon=code)
        t += think(d, 6.0 * speed, 0.6)
        if code == EXPIRED_COUPON or d.u() < 0.08:
            log.add(t, COUPON_REJECTED, coupon=code)
            t += think(d, 9.0 * speed, 0.6)
        else:
            total *= 1.0 - COUPON_DISCOUNT.get(code, 0.0)
    if d.u() < 0.03:
        log.add(t, ADDRESS_CHANGE)
        t += think(d, 35.0 * speed, 0.6)
    method, card = users.pay[user], users.card[user]
    if d.u() < 0.1:
        method = d.randint(0, len(PAYMENT_METHODS) - 1)
        card = d.token() if method in CARD_METHODS else -1
    total = round(total, 2)
    log.add(t, CHECKOUT, amount=total, pay=method, card=card)
    t += think(d, 30.0 * speed, 0.8)
    if d.u() < 0.12:
        return t, False
    for attempt in range(2):
        log.add(t, PAYMENT_ATTEMPT, amount=total, pay=method, card=card)
        t += think(d, 4.0 * speed, 0.6)
        if d.u() < (0.94 if attempt == 0 else 0.8):
            log.add(t, PAYMENT_SUCCESS, amount=total, pay=method, card=card)
            return t + think(d, 10.0 * speed, 0.7), True
        log.add(t, PAYMENT_FAILED, amount=total, pay=method, card=card)
        t += think(d, 20.0 * speed, 0.7)
        if attempt == 0 and d.u() < 0.3:
            break
        if d.u() < 0.35:
            method, card = CREDIT_CARD, d.token()
            log.add(t, ADD_PAYMENT_METHOD, pay=method, card=card)
            t += think(d, 40.0 * speed, 0.5)
    return t, False


def plan_follow_ups(ctx: SimContext, user: int, start: float, cart: dict[int, int]) -> list[FollowUp]:
    """Reviews and returns an order leads to, days after ``start``."""
    d, cat = ctx.draws, ctx.catalog
    ret_prop = ctx.users.return_prop[user]
    returned = [
        (i, q) for i, q in cart.items() if d.u() < min(cat.return_rate[cat.item_cat_list[i]] * ret_prop, 0.9)
    ]
    plans: list[FollowUp] = []
    if returned:
        plans.append(FollowUp(user, start + 86400.0 * d.lognormal(6.0, 0.4), RETURN_REQUEST, returned))
    kept = [(i, q) for i, q in cart.items() if (i, q) not in returned]
    if kept and d.u() < 0.14:
        plans.append(FollowUp(user, start + 86400.0 * d.lognormal(5.0, 0.5), REVIEW, [kept[0]]))
    return [p for p in plans if p.start < ctx.starts.span]


def normal_session(ctx: SimContext, user: int, start: float, signup: bool = False) -> list[FollowUp]:
    """Write one normal session of ``user`` starting at ``start``; return planned follow-ups."""
    d, log, users = ctx.draws, ctx.log, ctx.users
    speed = users.speed[user]
    device, device_id, new_device = users.pick_device(user, d)
    country = users.country[user] if d.u() > 0.015 else d.choice(FOREIGN_COUNTRIES)
    log.new_session(user, device, device_id, country, start)
    t = 0.0
    if signup:
        log.add(t, SIGNUP)
        t += think(d, 45.0 * speed, 0.5)
    elif new_device or users.logs_in(user, device, d):
        t = login(ctx, t, speed)
    r = d.u()
    if r < 0.03:  # account maintenance, then a look around
        log.add(t, ADDRESS_CHANGE if d.u() < 0.6 else PASSWORD_CHANGE)
        t = browse(ctx, user, t + think(d, 30.0 * speed, 0.6), d.geometric(1.5))
        return []
    buying = r < 0.25
    n_views = 1 + int(d.lognormal(4.5 if buying else 3.2, 0.9))
    cart_prob = min((0.25 if buying else 0.04) * users.buy_prop[user], 0.8)
    cart: dict[int, int] = {}
    t = browse(ctx, user, t, n_views, cart_prob, cart)
    plans: list[FollowUp] = []
    if cart and d.u() < (0.55 if buying else 0.2):
        t, ordered = pay(ctx, user, t, cart, signup)
        if ordered:
            plans = plan_follow_ups(ctx, user, start, cart)
            if d.u() < 0.15:
                t = browse(ctx, user, t, 1 + d.geometric(1.0))
    if device not in APP_DEVICES and d.u() < 0.1:
        log.add(t, LOGOUT)
    return plans


def follow_up_session(ctx: SimContext, plan: FollowUp) -> None:
    """Write a review or return session planned by an earlier order."""
    d, log, users = ctx.draws, ctx.log, ctx.users
    user = plan.user
    speed = users.speed[user]
    device, device_id, new_device = users.pick_device(user, d)
    log.new_session(user, device, device_id, users.country[user], plan.start)
    t = 0.0
    if new_device or d.u() < 0.4:
        t = login(ctx, t, speed)
    for item, qty in plan.items:
        log.add(t, VIEW, item=item)
        t += think(d, 12.0 * speed, 0.7)
        if plan.kind == REVIEW:
            log.add(t, REVIEW, item=item, rating=d.pick(RATING_CDF) + 1)
            t += think(d, 20.0 * speed, 0.7)
        else:
            log.add(t, RETURN_REQUEST, item=item, qty=qty)
            t += think(d, 30.0 * speed, 0.6)
    if d.u() < 0.35:
        browse(ctx, user, t, 1 + d.geometric(2.0))
