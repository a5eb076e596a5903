"""Business flows of the four industries in Amplitude's migration guide.

Each industry turns one session into a short list of ``(event, properties, charge)``
steps. ``charge`` is the amount Mixpanel's legacy revenue would record on the
profile's ``$transactions`` (0 for none; negative for refunds).

* e-commerce: product views, add to cart, cart, checkout, multi-item orders, refunds;
* B2B: trial, onboarding steps, activation (first project), invites, upgrades;
* fintech: account opening, KYC, money transfers in several currencies, fees;
* streaming: free trial, subscription, content plays with genre and duration.

Catalogues are fixed module data (not seeded) so the Lexicon schema is stable.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

Step = tuple[str, dict[str, Any] | None, float]
INDUSTRIES = ("ecommerce", "b2b", "fintech", "streaming")

_cat = Random(20240101)
_CATEGORIES = ("Shoes", "Outerwear", "Accessories", "Home", "Electronics", "Beauty")
PRODUCTS: tuple[dict[str, Any], ...] = tuple(
    {"product_id": f"SKU-{1000 + i}", "product_name": f"{_CATEGORIES[i % 6]} item {i}",
     "category": _CATEGORIES[i % 6], "price": round(5 + _cat.random() * 195, 2), "currency": "USD"}
    for i in range(120)
)
_GENRES = ("Drama", "Comedy", "Documentary", "Thriller", "Kids", "Sci-Fi", "Romance")
TITLES: tuple[dict[str, Any], ...] = tuple(
    {"content_id": f"tt{7000000 + i * 37}", "title": f"Title {i}", "genre": _GENRES[i % 7],
     "content_type": "episode" if i % 3 else "movie",
     "content_duration_s": 1500 + int(_cat.random() * 6000)}
    for i in range(150)
)
_CURRENCIES = (("USD", 1.0), ("EUR", 1.08), ("GBP", 1.27), ("JPY", 0.0067), ("INR", 0.012), ("BRL", 0.2))
_ONBOARDING = ("create_workspace", "connect_data", "invite_team", "first_dashboard")
_SUBSCRIPTIONS = (("monthly", 12.99), ("annual", 129.0))

# event name -> page path, for $current_url on web events
PAGES: dict[str, str] = {
    "Product Viewed": "/products/", "Product Added": "/products/", "Cart Viewed": "/cart",
    "Checkout Started": "/checkout", "Order Completed": "/checkout/complete",
    "Products Searched": "/search", "Signed Up": "/signup", "Logged In": "/login",
    "Trial Started": "/onboarding", "Onboarding Step Completed": "/onboarding",
    "Project Created": "/app/projects/new", "Teammate Invited": "/app/settings/team",
    "Dashboard Viewed": "/app/dashboards", "Plan Upgraded": "/app/billing",
    "Pricing Viewed": "/pricing", "Account Created": "/open-account", "Content Played": "/watch",
    "Browse Catalog": "/browse", "Free Trial Started": "/trial",
}

FUNNELS: dict[str, tuple[str, ...]] = {
    "ecommerce": ("Product Viewed", "Product Added", "Checkout Started", "Order Completed"),
    "b2b": ("Trial Started", "Onboarding Step Completed", "Project Created", "Teammate Invited"),
    "fintech": ("Account Created", "KYC Verified", "Money Transfer Sent"),
    "streaming": ("Free Trial Started", "Content Played", "Subscription Started"),
}
SIGNUP_EVENT = {"ecommerce": "Signed Up", "b2b": "Signed Up", "fintech": "Account Created",
                "streaming": "Signed Up"}


WEB_VIEWS: dict[str, dict[str, Any]] = {
    name: {"$current_url": "https://app.example.com" + path, "current_domain": "app.example.com",
           "current_page_title": name, "current_url_path": path, "current_url_protocol": "https:",
           "current_url_search": ""}
    for name, path in PAGES.items()
}
SCREENS: dict[str, dict[str, Any]] = {name: {"screen_name": name.replace(" ", "")} for name in PAGES}


# Event properties drawn from a small set are module constants: the emitter serializes each
# once (sessions._Tables), and never mutates one. _pick draws them as it drew their values.
_SEARCHES = tuple({"search_term": category.lower()} for category in _CATEGORIES)
_PRICING_VIEWS = tuple({"plan_viewed": plan} for plan in ("starter", "pro", "business"))
_RATES_VIEWS = tuple({"currency_pair": f"USD/{currency}"} for currency, _ in _CURRENCIES)
_GENRE_VIEWS = tuple({"genre": genre} for genre in _GENRES)
_KYC_DOCUMENTS = tuple({"document_type": kind} for kind in ("passport", "id_card", "driving_licence"))
DASHBOARDS = tuple({"dashboard_id": f"d{number}"} for number in range(50))
_ACCOUNTS = tuple({"account_type": kind} for kind in ("checking", "savings"))
ONBOARDING_STEPS = tuple({"step": number, "step_name": name} for number, name in enumerate(_ONBOARDING, start=1))
COMPLETIONS = {title["content_id"]: {"content_id": title["content_id"], "genre": title["genre"]} for title in TITLES}
# "Product Added" of each product in each quantity (1 or 2), keyed by the product's id
ADDED: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {
    id(product): ({**product, "quantity": 1}, {**product, "quantity": 2}) for product in PRODUCTS
}
CART_VIEWS = tuple({"item_count": count} for count in range(6))  # a cart holds 1-5 products
CONSTANT_EXTRAS: tuple[dict[str, Any], ...] = (
    *PRODUCTS, *_SEARCHES, *_PRICING_VIEWS, *_RATES_VIEWS, *_GENRE_VIEWS, *_KYC_DOCUMENTS, *DASHBOARDS,
    *_ACCOUNTS, *ONBOARDING_STEPS, *COMPLETIONS.values(), *[added for pair in ADDED.values() for added in pair],
    *CART_VIEWS,
)


# the view step shown before an event, one shared tuple per event name and platform kind
_WEB_VIEW_STEPS: dict[str, Step] = {name: ("$mp_web_page_view", view, 0.0) for name, view in WEB_VIEWS.items()}
_SCREEN_STEPS: dict[str, Step] = {name: ("Screen Viewed", view, 0.0) for name, view in SCREENS.items()}


def with_views(rng: Random, steps: list[Step], web: bool, out: list[Step] | None = None) -> list[Step]:
    """Page views (mixpanel-js ``track_pageview``) or screen views before most steps,
    appended to ``out`` (a new list by default), which is returned."""
    views = _WEB_VIEW_STEPS if web else _SCREEN_STEPS
    rnd = rng.random
    if out is None:
        out = []
    append = out.append
    for step in steps:
        view = views.get(step[0])
        if view is not None and rnd() < 0.7:
            append(view)
        append(step)
    return out


def _pick(rng: Random, seq: tuple[Any, ...]) -> Any:
    return seq[int(rng.random() * len(seq))]


def anonymous_session(rng: Random, industry: str) -> list[Step]:
    """What someone who has not signed up does: browse."""
    rnd = rng.random
    n = 1 + int(rnd() * 4)
    if industry == "ecommerce":
        steps: list[Step] = [("Products Searched", _SEARCHES[int(rnd() * len(_SEARCHES))], 0.0)]
        for _ in range(n):  # loops, not comprehensions: a comprehension is a call in Python 3.11
            steps.append(("Product Viewed", PRODUCTS[int(rnd() * len(PRODUCTS))], 0.0))
        return steps
    if industry == "b2b":
        return [("Pricing Viewed", _PRICING_VIEWS[int(rnd() * len(_PRICING_VIEWS))], 0.0)]
    if industry == "fintech":
        return [("Rates Viewed", _RATES_VIEWS[int(rnd() * len(_RATES_VIEWS))], 0.0)]
    steps = []
    for _ in range(n):
        steps.append(("Browse Catalog", _GENRE_VIEWS[int(rnd() * len(_GENRE_VIEWS))], 0.0))
    return steps


def signup_steps(rng: Random, industry: str, state: dict[str, Any]) -> list[Step]:
    """The events that follow the sign-up event in its session."""
    if industry == "b2b":
        steps: list[Step] = [("Trial Started", {"trial_days": 14, "plan": "pro"}, 0.0)]
        for number, step in enumerate(ONBOARDING_STEPS, start=1):
            if rng.random() < 0.25:
                break
            steps.append(("Onboarding Step Completed", step, 0.0))
            state["onboarding"] = number
        return steps
    if industry == "fintech":
        steps = [("KYC Submitted", _pick(rng, _KYC_DOCUMENTS), 0.0)]
        if rng.random() < 0.8:
            steps.append(("KYC Verified", {"verification_seconds": int(30 + rng.random() * 600)}, 0.0))
            state["kyc"] = True
        return steps
    if industry == "streaming":
        state["trial"] = True
        return [("Free Trial Started", {"trial_days": 7, "plan": "monthly"}, 0.0)]
    return []


def identified_session(rng: Random, industry: str, state: dict[str, Any]) -> list[Step]:
    """One session of a signed-up user."""
    return FLOWS[industry](rng, state)


def _ecommerce(rng: Random, state: dict[str, Any]) -> list[Step]:
    rnd = rng.random
    steps: list[Step] = []
    if "last_order" in state and rnd() < 0.05:
        order_id, total = state.pop("last_order")
        steps.append(("Order Refunded", {"order_id": order_id, "refund_amount": total, "currency": "USD",
                                         "reason": _pick(rng, ("damaged", "wrong_size", "not_as_described"))}, -total))
    viewed: list[dict[str, Any]] = []
    for _ in range(1 + int(rnd() * 5)):
        product = PRODUCTS[int(rnd() * len(PRODUCTS))]
        viewed.append(product)
        steps.append(("Product Viewed", product, 0.0))
    if rnd() >= 0.35:
        return steps
    cart = viewed[: 1 + int(rnd() * len(viewed))]
    for product in cart:
        steps.append(("Product Added", ADDED[id(product)][int(rnd() * 2)], 0.0))
    if rnd() < 0.6:
        steps.append(("Cart Viewed", CART_VIEWS[len(cart)], 0.0))
    if rnd() >= 0.55:
        return steps
    items = [{"product_id": p["product_id"], "price": p["price"], "quantity": 1 + int(rng.random() * 2)}
             for p in cart]
    total = round(sum(i["price"] * i["quantity"] for i in items), 2)
    steps.append(("Checkout Started", {"item_count": len(items), "cart_value": total, "currency": "USD"}, 0.0))
    if rng.random() < 0.75:
        order_id = f"ORD-{rng.getrandbits(32):08X}"
        state["last_order"] = (order_id, total)
        steps.append(("Order Completed", {"order_id": order_id, "revenue": total, "currency": "USD",
                                          "item_count": len(items), "products": items,
                                          "coupon": _pick(rng, ("", "", "WELCOME10", "SPRING"))}, total))
    return steps


def _b2b(rng: Random, state: dict[str, Any]) -> list[Step]:
    rnd = rng.random
    steps: list[Step] = [("Dashboard Viewed", DASHBOARDS[int(rnd() * len(DASHBOARDS))], 0.0)]
    done = state.get("onboarding", 0)
    if done < len(_ONBOARDING) and rnd() < 0.5:
        steps.append(("Onboarding Step Completed", ONBOARDING_STEPS[done], 0.0))
        state["onboarding"] = done + 1
    if not state.get("activated") and rnd() < 0.4:
        state["activated"] = True
        steps.append(("Project Created", {"project_type": _pick(rng, ("analytics", "crm", "marketing")),
                                          "is_first": True}, 0.0))
    if state.get("activated") and rnd() < 0.25:
        steps.append(("Teammate Invited", {"invitee_role": _pick(rng, ("admin", "member", "viewer")),
                                           "invites_sent": 1 + int(rng.random() * 4)}, 0.0))
    if state.get("activated") and not state.get("paid") and rnd() < 0.05:
        state["paid"] = True
        mrr = _pick(rng, (49.0, 99.0, 299.0))
        steps.append(("Plan Upgraded", {"from_plan": "trial", "to_plan": "pro", "mrr": mrr,
                                        "billing_cycle": "monthly"}, mrr))
    return steps


_TRANSFERS = ("p2p", "international", "bill")


def _fintech(rng: Random, state: dict[str, Any]) -> list[Step]:
    rnd = rng.random
    steps: list[Step] = [("Balance Checked", _ACCOUNTS[int(rnd() * len(_ACCOUNTS))], 0.0)]
    if not state.get("kyc"):
        if rnd() < 0.3:
            state["kyc"] = True
            steps.append(("KYC Verified", {"verification_seconds": int(3600 + rng.random() * 86400)}, 0.0))
        return steps
    for _ in range(int(rnd() * 2.5)):
        currency, usd_rate = _CURRENCIES[int(rnd() * len(_CURRENCIES))]
        amount = round((10 + rnd() * 990) / usd_rate, 2 if currency != "JPY" else 0)
        fee = round(0.5 + amount * usd_rate * 0.004, 2)
        steps.append(("Money Transfer Started", {"currency": currency, "amount": amount}, 0.0))
        if rnd() < 0.85:
            steps.append(("Money Transfer Sent", {"currency": currency, "amount": amount,
                                                  "destination_currency": _CURRENCIES[int(rnd() * len(_CURRENCIES))][0],
                                                  "fee_usd": fee, "transfer_type": _TRANSFERS[int(rnd() * 3)]}, fee))
    return steps


_QUALITIES = ("HD", "4K", "SD")


def _streaming(rng: Random, state: dict[str, Any]) -> list[Step]:
    rnd = rng.random
    steps: list[Step] = []
    for _ in range(1 + int(rnd() * 3)):
        title = TITLES[int(rnd() * len(TITLES))]
        duration = title["content_duration_s"]
        watched = int(duration * (0.1 + rnd() * 0.9))
        steps.append(("Content Played", {**title, "watch_duration_s": watched,
                                         "quality": _QUALITIES[int(rnd() * 3)]}, 0.0))
        if watched > duration * 0.9:
            steps.append(("Content Completed", COMPLETIONS[title["content_id"]], 0.0))
    if state.get("trial") and rnd() < 0.2:
        state["trial"] = False
        state["subscribed"] = True
        plan, price = _pick(rng, _SUBSCRIPTIONS)
        steps.append(("Subscription Started", {"plan": plan, "price": price, "currency": "USD"}, price))
    elif state.get("subscribed") and rnd() < 0.02:
        state["subscribed"] = False
        steps.append(("Subscription Cancelled", {"reason": _pick(rng, ("price", "content", "other"))}, 0.0))
    return steps


# identified_session per industry (the planner calls them directly)
FLOWS: dict[str, Callable[[Random, dict[str, Any]], list[Step]]] = {
    "ecommerce": _ecommerce, "b2b": _b2b, "fintech": _fintech, "streaming": _streaming,
}


def server_event(rng: Random, industry: str, state: dict[str, Any]) -> Step | None:
    """An event a backend sends (mixpanel-python via /import), sometimes, after a session."""
    if rng.random() >= 0.08:
        return None
    return backend_event(rng, industry, state)


SERVER_SHARE = 0.08  # sessions followed by a backend event (server_event's first draw)


def backend_event(rng: Random, industry: str, state: dict[str, Any]) -> Step:
    """``server_event`` once its first draw said yes."""
    if industry == "ecommerce":
        return ("Order Shipped", {"carrier": _pick(rng, ("UPS", "DHL", "USPS"))}, 0.0)
    if industry == "b2b":
        return ("Report Emailed", {"report_type": _pick(rng, ("weekly", "monthly"))}, 0.0)
    if industry == "fintech":
        return ("Statement Generated", {"period": "monthly"}, 0.0)
    if state.get("subscribed"):
        return ("Subscription Renewed", {"plan": "monthly", "price": 12.99, "currency": "USD"}, 12.99)
    return ("Recommendations Sent", {"count": 5}, 0.0)


# Lexicon descriptions of the events above (schema.py turns them into SchemaEntry objects)
DESCRIPTIONS: dict[str, str] = {
    "Product Viewed": "A product detail page was shown", "Product Added": "Added to cart",
    "Cart Viewed": "Cart opened", "Checkout Started": "Checkout began",
    "Order Completed": "Order paid (multi-item; revenue in USD)", "Order Refunded": "Order refunded",
    "Products Searched": "Catalogue search", "Order Shipped": "Backend: order shipped",
    "Signed Up": "Account created", "Logged In": "User logged in", "Logged Out": "User logged out",
    "App Open": "App opened", "Screen Viewed": "A screen was shown",
    "Trial Started": "B2B trial started", "Onboarding Step Completed": "Onboarding progress",
    "Project Created": "Activation: first project", "Teammate Invited": "Invites sent",
    "Dashboard Viewed": "Dashboard opened", "Plan Upgraded": "Paid plan started",
    "Pricing Viewed": "Pricing page", "Report Emailed": "Backend: report e-mailed",
    "Account Created": "Fintech sign-up", "KYC Submitted": "Identity documents sent",
    "KYC Verified": "Identity verified", "Balance Checked": "Balance viewed",
    "Money Transfer Started": "Transfer form submitted", "Money Transfer Sent": "Transfer executed",
    "Rates Viewed": "FX rates page", "Statement Generated": "Backend: monthly statement",
    "Free Trial Started": "Streaming trial started", "Content Played": "Playback started",
    "Content Completed": "Playback reached 90 %", "Subscription Started": "Paid subscription",
    "Subscription Cancelled": "Subscription cancelled", "Subscription Renewed": "Backend: renewal",
    "Browse Catalog": "Catalogue browsed", "Recommendations Sent": "Backend: recommendations",
    "$mp_web_page_view": "Page view (mixpanel-js track_pageview)",
}

# Steps every industry shares: how a session opens, how people sign up and log in, and
# what an app shows after a logout.
WEB_OPENER: Step = ("$mp_web_page_view", {"current_page_title": "Home", "current_url_path": "/"}, 0.0)
APP_OPENERS: tuple[Step, Step] = (("App Open", {"launch_type": "cold"}, 0.0),
                                           ("App Open", {"launch_type": "warm"}, 0.0))
SIGNUP_METHODS = ({"signup_method": "email"}, {"signup_method": "google"})
LOGIN_METHODS = ({"login_method": "password"}, {"login_method": "sso"})
METHODS = (*SIGNUP_METHODS, *LOGIN_METHODS)
AFTER_LOGOUT: tuple[Step, ...] = (("App Open", {"launch_type": "warm"}, 0.0),
                                       ("Screen Viewed", {"screen_name": "Login"}, 0.0))
