"""Account and payment fraud: card testing, account takeover, returns and coupon abuse.

Each generator writes one incident (one session, or a small group sharing a
device or a code) and returns the number of sessions written.  About half
use human timing and a normal-looking start so that only the short
fraudulent part differs from a shopper's session.
"""

from __future__ import annotations

from .actors import HOME_CDF, Clock, fresh_account, open_session
from .context import DAY, SimContext, start_before
from .core import (
    ADD_PAYMENT_METHOD,
    ADD_TO_CART,
    ADDRESS_CHANGE,
    ANDROID_APP,
    APPLY_COUPON,
    CHECKOUT,
    COUPON_REJECTED,
    CREDIT_CARD,
    DESKTOP_WEB,
    FOREIGN_COUNTRIES,
    GENUINE_COUPONS,
    GUESSED_COUPONS,
    IOS_APP,
    LEAKED_COUPON,
    LOGIN,
    LOGIN_FAILED,
    LOGOUT,
    MOBILE_WEB,
    PASSWORD_CHANGE,
    PAYMENT_ATTEMPT,
    PAYMENT_FAILED,
    PAYMENT_SUCCESS,
    RETURN_REQUEST,
    SIGNUP,
    VIEW,
    think,
)
from .normal import browse, login


def card_testing(ctx: SimContext, budget: int) -> int:
    """Stolen cards tried one after another on a cheap item, then small purchases with the good ones.

    A group shares one machine (device id) across fresh accounts.
    """
    d, log_, cat = ctx.draws, ctx.log, ctx.catalog
    group = log_.new_group()
    n = min(budget, d.randint(2, 4)) if budget >= 2 and d.u() < 0.45 else 1
    scripted = d.u() < 0.6
    device, device_id = d.choice((DESKTOP_WEB, MOBILE_WEB, ANDROID_APP)), d.token()
    country = d.choice(FOREIGN_COUNTRIES) if d.u() < 0.5 else d.pick(HOME_CDF)
    base = ctx.starts.flat(d)
    for i in range(n):
        user = fresh_account(ctx, new=True)
        clock = Clock(d, scripted, 1.0 + 2.0 * d.u(), ctx.users.speed[user])
        open_session(
            ctx, "card_testing", group, user, base + i * (60.0 + 840.0 * d.u()), device, device_id, country
        )
        log_.add(0.0, SIGNUP if d.u() < 0.6 else LOGIN)
        t = clock.step(20.0)
        if not scripted:
            t = browse(ctx, user, t, d.randint(1, 3))
        for purchase in range(1 + (d.u() < 0.3)):
            item = d.choice(cat.cheapest)
            price = cat.price_list[item]
            for ev, kw in ((VIEW, {"item": item}), (ADD_TO_CART, {"item": item, "qty": 1})):
                log_.add(t, ev, **kw)
                t += clock.step(8.0)
            log_.add(t, CHECKOUT, amount=price, pay=CREDIT_CARD)
            t += clock.step(15.0)
            for _ in range(d.randint(2, 6) if purchase == 0 else d.randint(0, 2)):
                card = d.token()
                if d.u() < 0.5:
                    log_.add(t, ADD_PAYMENT_METHOD, pay=CREDIT_CARD, card=card)
                    t += clock.step(15.0)
                log_.add(t, PAYMENT_ATTEMPT, amount=price, pay=CREDIT_CARD, card=card)
                t += clock.step(3.0)
                log_.add(t, PAYMENT_FAILED, amount=price, pay=CREDIT_CARD, card=card)
                t += clock.step(5.0)
            card = d.token()
            log_.add(t, PAYMENT_ATTEMPT, amount=price, pay=CREDIT_CARD, card=card)
            t += clock.step(3.0)
            log_.add(t, PAYMENT_SUCCESS, amount=price, pay=CREDIT_CARD, card=card)
            t += clock.step(8.0)
    return n


def account_takeover(ctx: SimContext, budget: int) -> int:
    """A stolen login: new device (often abroad), address change, fast high-value orders.

    Credential-stuffing campaigns hit several victims from one attacker device;
    the subtle ones come from the victim's country and look around first.
    """
    d, log_, cat, users = ctx.draws, ctx.log, ctx.catalog, ctx.users
    group = log_.new_group()
    n = min(budget, d.randint(2, 3)) if budget >= 2 and d.u() < 0.3 else 1
    device, device_id = d.choice((DESKTOP_WEB, MOBILE_WEB, ANDROID_APP)), d.token()
    abroad, fast = d.u() < 0.7, d.u() < 0.6
    base = ctx.starts.flat(d)
    for i in range(n):
        victim = d.choice(ctx.victims) if ctx.victims else fresh_account(ctx, new=False)
        country = d.choice(FOREIGN_COUNTRIES) if abroad else users.country[victim]
        clock = Clock(d, False, 0.0, 0.2 if fast else users.speed[victim])
        open_session(
            ctx,
            "account_takeover",
            group,
            victim,
            base + i * (30.0 + 570.0 * d.u()),
            device,
            device_id,
            country,
        )
        t = 0.0
        for _ in range(d.geometric(0.8)):
            log_.add(t, LOGIN_FAILED)
            t += clock.step(8.0)
        t = login(ctx, t, 0.2 if fast else users.speed[victim], fail_prob=0.0)
        if not fast:
            t = browse(ctx, victim, t, d.randint(1, 3))
        if d.u() < 0.4:
            log_.add(t, PASSWORD_CHANGE)
            t += clock.step(20.0)
        if d.u() < 0.9:
            log_.add(t, ADDRESS_CHANGE)
            t += clock.step(30.0)
        method, card = users.pay[victim], users.card[victim]
        if d.u() < 0.25:
            method, card = CREDIT_CARD, d.token()
            log_.add(t, ADD_PAYMENT_METHOD, pay=method, card=card)
            t += clock.step(30.0)
        for _ in range(1 + (d.u() < 0.35)):
            total = 0.0
            for _ in range(d.randint(1, 2)):
                item, qty = d.choice(cat.expensive), 1 + (d.u() < 0.3)
                log_.add(t, VIEW, item=item)
                t += clock.step(10.0)
                log_.add(t, ADD_TO_CART, item=item, qty=qty)
                t += clock.step(5.0)
                total += cat.price_list[item] * qty
            for ev in (CHECKOUT, PAYMENT_ATTEMPT, PAYMENT_SUCCESS):
                log_.add(t, ev, amount=round(total, 2), pay=method, card=card)
                t += clock.step(12.0 if ev == CHECKOUT else 4.0)
        if d.u() < 0.3:
            log_.add(t, LOGOUT)
    return n


def returns_abuse(ctx: SimContext, budget: int) -> int:
    """One account ordering several sizes and returning (almost) everything, again and again.

    Each later session returns the previous order and places a new one; the
    last returns only.
    """
    d, log_, cat, users = ctx.draws, ctx.log, ctx.catalog, ctx.users
    group = log_.new_group()
    n = min(budget, d.randint(2, 5))
    by_returns = sorted(range(cat.n_categories), key=lambda c: -cat.return_rate[c])
    favs = [c for c in by_returns[:6] if cat.cat_items[c]][:3] or None
    user = fresh_account(ctx, new=False, favourites=favs)
    gap = DAY * (2.5 + 3.5 * d.u())
    base = start_before(ctx.starts, d, ctx.starts.span - (n - 1) * gap)
    if base + (n - 1) * gap > ctx.starts.span:  # short window: squeeze the chain
        gap = max((ctx.starts.span - base) / n, 4 * 3600.0)
    previous: list[tuple[int, int]] = []
    for j in range(n):
        open_session(ctx, "returns_abuse", group, user, base + j * gap)
        t = login(ctx, 0.0, users.speed[user]) if d.u() < 0.5 else 0.0
        for k, (item, qty) in enumerate(previous):
            if k == 0 or d.u() < 0.95:  # (almost) everything goes back
                log_.add(t, RETURN_REQUEST, item=item, qty=qty)
                t += think(d, 25.0 * users.speed[user], 0.6)
        if j == n - 1 and previous:
            break
        cart: dict[int, int] = {}
        t = browse(ctx, user, t, d.randint(2, 6), 0.6, cart)
        if not cart:
            item = ctx.catalog.sample_item(d, users.fav_cats[user][0])
            log_.add(t, ADD_TO_CART, item=item, qty=1)
            cart[item] = 1
            t += think(d, 6.0, 0.6)
        bracket = next(iter(cart))  # a second size of the same item
        log_.add(t, ADD_TO_CART, item=bracket, qty=1 + (d.u() < 0.4))
        cart[bracket] += 1
        t += think(d, 6.0, 0.6)
        total = round(sum(cat.price_list[i] * q for i, q in cart.items()), 2)
        for ev in (CHECKOUT, PAYMENT_ATTEMPT, PAYMENT_SUCCESS):
            log_.add(t, ev, amount=total, pay=users.pay[user], card=users.card[user])
            t += think(d, 15.0, 0.7)
        previous = list(cart.items())
    return n


def coupon_abuse(ctx: SimContext, budget: int) -> int:
    """Fresh accounts from one phone reusing the welcome and a leaked code, or code guessing.

    The multi-account kind is individually close to a normal new customer;
    only the group (same device, same codes, minutes apart) gives it away.
    """
    d, log_, cat, users = ctx.draws, ctx.log, ctx.catalog, ctx.users
    group = log_.new_group()
    guessing = d.u() < 0.35
    n = 1 if guessing or budget < 3 else min(budget, d.randint(3, 7))
    device = d.choice((IOS_APP, ANDROID_APP, MOBILE_WEB))
    shared_device = d.token() if d.u() < 0.6 else -1
    country = d.pick(HOME_CDF)
    leaked = d.u() < 0.5
    base = ctx.starts.human(d)
    for i in range(n):
        user = fresh_account(ctx, new=True)
        clock = Clock(d, guessing, 1.0 + d.u(), users.speed[user])
        dev_id = shared_device if shared_device >= 0 else users.device_id[user]
        open_session(
            ctx, "coupon_abuse", group, user, base + i * (240.0 + 960.0 * d.u()), device, dev_id, country
        )
        log_.add(0.0, SIGNUP)
        t = think(d, 40.0 * users.speed[user], 0.5)
        if d.u() < 0.4:
            t = browse(ctx, user, t, d.randint(1, 3))
        item = cat.sample_item(d, users.pick_category(user, d, cat))
        log_.add(t, VIEW, item=item)
        t += think(d, 15.0 * users.speed[user], 0.8)
        log_.add(t, ADD_TO_CART, item=item, qty=1)
        t += think(d, 6.0 * users.speed[user], 0.6)
        price = cat.price_list[item]
        if guessing:
            for _ in range(d.randint(4, 10)):
                code = d.choice(GUESSED_COUPONS)
                log_.add(t, APPLY_COUPON, coupon=code)
                t += clock.step(2.0)
                log_.add(t, COUPON_REJECTED, coupon=code)
                t += clock.step(3.0)
            codes = [LEAKED_COUPON]
        else:
            codes = [GENUINE_COUPONS[0], LEAKED_COUPON] if leaked else [GENUINE_COUPONS[0]]
        for code in codes:
            log_.add(t, APPLY_COUPON, coupon=code)
            t += think(d, 5.0 * users.speed[user], 0.6)
        total = round(price * (0.6 if LEAKED_COUPON in codes else 0.9), 2)
        for ev in (CHECKOUT, PAYMENT_ATTEMPT, PAYMENT_SUCCESS):
            log_.add(t, ev, amount=total, pay=users.pay[user], card=users.card[user])
            t += think(d, 12.0 * users.speed[user], 0.7)
    return n
