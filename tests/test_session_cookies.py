"""The NVR session cookie: kept from Set-Cookie, sent as one header, removed when expired."""

from __future__ import annotations

from http.cookies import SimpleCookie

from bridge.nvr.client import SessionCookies


def _set_cookie(text: str) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(text)
    return cookie


def test_cookies_are_sent_back_and_replaced_by_newer_values():
    cookies = SessionCookies()
    assert cookies.header == {}
    cookies.update(_set_cookie("session=abc; Path=/; HttpOnly"))
    assert cookies.header == {"Cookie": "session=abc"}
    cookies.update(_set_cookie("lang=en"))
    cookies.update(_set_cookie("session=def; Path=/"))
    assert cookies.header == {"Cookie": "session=def; lang=en"}


def test_expired_cookies_are_removed():
    cookies = SessionCookies()
    cookies.update(_set_cookie("session=abc; Path=/"))
    cookies.update(_set_cookie("lang=en"))
    cookies.update(_set_cookie("session=; Max-Age=0"))
    assert cookies.header == {"Cookie": "lang=en"}
    cookies.update(_set_cookie('lang=x; expires="Thu, 01 Jan 1970 00:00:00 GMT"'))
    assert cookies.header == {}
    # A future expiry, or an attribute that cannot be read, keeps the cookie.
    cookies.update(_set_cookie('a=1; expires="Fri, 01 Jan 2100 00:00:00 GMT"'))
    cookies.update(_set_cookie("b=2; Max-Age=junk"))
    assert cookies.header == {"Cookie": "a=1; b=2"}
