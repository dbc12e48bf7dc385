"""Accounts: register, log in, log out (HTML forms with CSRF tokens)."""

from __future__ import annotations

import hashlib

from aiohttp import web
from aiohttp_session import get_session

from pixelfox import errors
from pixelfox.passwords import password_problem
from pixelfox.session_index import ACCOUNT_DISABLED
from pixelfox.usernames import is_user_name
from web import ratelimit
from web.keys import MANAGER, REDIS, SETTINGS
from web.sessions import current_user, login, logout, session_ended
from web.views.common import checked_form, local_path, render, sentence

#: what the login page says to a disabled user (the right password, or a session that ended for it)
DISABLED = sentence(errors.AccountDisabled.default_message)
REGISTER_WINDOW_S = 3600  # the window of WebSettings.register_per_hour


async def register_page(request: web.Request) -> web.Response:
    return await render(request, "register.html", {"name": "", "error": ""})


def _registration_key(request: web.Request) -> str:
    return f"pixelfox:{{limits}}:register:ip:{request.remote or '-'}"


async def _registration_wait(request: web.Request) -> int:
    """Count one registration for the caller's address; seconds to wait when over the hourly limit."""
    limit = request.app[SETTINGS].register_per_hour
    if not limit:
        return 0
    return await ratelimit.take(request.app[REDIS], [(_registration_key(request), limit)], REGISTER_WINDOW_S)


async def register(request: web.Request) -> web.StreamResponse:
    """A new account, logged in at once. Refused (400, nothing made) to a browser that is logged in: the
    new account's session replaced theirs without a word."""
    session, form = await checked_form(request)
    name, password = form.get("name", "").strip(), form.get("password", "")
    error = ""
    if current_user(session) is not None:
        error = "You are logged in: log out first to create another account."
    elif not is_user_name(name):
        error = "User names are 3-32 ASCII letters (a-z, A-Z), digits, '.', '_' or '-'."
    elif problem := password_problem(password):
        error = sentence(problem)
    elif password != form.get("password2", ""):
        error = "The two passwords differ."
    if not error:
        wait = await _registration_wait(request)
        if wait:
            ctx = {"name": name, "error": f"Too many new accounts from this address; try again in {wait} s."}
            return ratelimit.retry_after(await render(request, "register.html", ctx, status=429), wait)
        try:
            user = await request.app[MANAGER].create_user(name, password)
        except (errors.AlreadyExists, errors.BadRequest) as exc:
            error = "That user name is taken." if isinstance(exc, errors.AlreadyExists) else exc.message
            if request.app[SETTINGS].register_per_hour:  # no account was made: the limit counts accounts
                await ratelimit.give_back(request.app[REDIS], [_registration_key(request)])
        else:
            await login(request, user)
            raise web.HTTPSeeOther("/")
    return await render(request, "register.html", {"name": name, "error": error}, status=400)


async def login_page(request: web.Request) -> web.Response:
    """The login form; it says the account is disabled to a browser whose session ended for that
    (:func:`web.sessions.session_ended`: the pages that need a login send it here)."""
    await get_session(request)
    disabled = session_ended(request) == ACCOUNT_DISABLED
    ctx = {"name": "", "error": DISABLED if disabled else "", "next": local_path(request.query.get("next", "/"))}
    return await render(request, "login.html", ctx)


#: the per-account ceiling over every address, as a multiple of ``login_max_failures``
ACCOUNT_CEILING = 10
#: the per-address budget over every account, as a multiple of ``login_max_failures``
ADDRESS_BUDGET = 5


def _throttle_keys(request: web.Request, name: str) -> tuple[str, str, str]:
    """The login counters of ``name`` tried from the caller's address: (account at this address,
    address over all accounts, account over all addresses)."""
    digest = hashlib.sha256(name.lower().encode()).hexdigest()[:32]
    address = request.remote or "-"
    return (f"pixelfox:{{login}}:fail:acct-ip:{digest}:{address}", f"pixelfox:{{login}}:fail:ip:{address}",
            f"pixelfox:{{login}}:fail:acct:{digest}")


async def _take_attempt(request: web.Request, name: str) -> int:
    """Count this login as a failure before the password is checked (RELIABILITY C5); 0 when it may
    go ahead, else seconds to wait. Counting first means parallel guesses cannot all pass the
    check, and a check that times out stays counted.

    Budgets per ``login_window_s``: ``login_max_failures`` for the account from this address,
    :data:`ADDRESS_BUDGET` times that for the address, and :data:`ACCOUNT_CEILING` times that for
    the account over all addresses. Someone guessing from one address so locks only that address
    out of the account, not its owner elsewhere; the ceiling bounds guessing from many addresses."""
    settings = request.app[SETTINGS]
    acct_ip, ip, acct = _throttle_keys(request, name)
    limit = settings.login_max_failures
    budgets = [(acct_ip, limit), (ip, limit * ADDRESS_BUDGET), (acct, limit * ACCOUNT_CEILING)]
    return await ratelimit.take(request.app[REDIS], budgets, settings.login_window_s)


async def _forget_attempt(request: web.Request, name: str) -> None:
    """A successful login: the account's failures from this address are forgotten, the address
    and the account's ceiling get this attempt back."""
    acct_ip, ip, acct = _throttle_keys(request, name)
    redis = request.app[REDIS]
    await ratelimit.forget(redis, [acct_ip])
    await ratelimit.give_back(redis, [ip, acct])


async def login_post(request: web.Request) -> web.StreamResponse:
    _session, form = await checked_form(request)
    name, password = form.get("name", "").strip(), form.get("password", "")
    next_url = local_path(form.get("next", "/"))
    ctx = {"name": name, "error": "", "next": next_url}
    wait = await _take_attempt(request, name)
    if wait:
        ctx["error"] = f"Too many failed logins; try again in {wait} s."
        return ratelimit.retry_after(await render(request, "login.html", ctx, status=429), wait)
    try:  # unknown names take the same path (the manager checks a dummy hash): same answer and timing
        user = await request.app[MANAGER].verify_password(name, password)
    except errors.AccountDisabled as exc:  # the right password: saying so tells nothing new
        await _forget_attempt(request, name)
        ctx["error"] = DISABLED
        return await render(request, "login.html", ctx, status=exc.http_status)
    except (errors.InvalidCredentials, errors.Unauthenticated, errors.NotFound, errors.BadRequest):
        ctx["error"] = "Invalid user name or password."
        return await render(request, "login.html", ctx, status=401)
    await _forget_attempt(request, name)
    await login(request, user)
    raise web.HTTPSeeOther(next_url)


async def logout_post(request: web.Request) -> web.StreamResponse:
    await checked_form(request)
    await logout(request)
    raise web.HTTPSeeOther("/")
