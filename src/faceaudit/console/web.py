"""HTTP for the console without a framework: one request, one response, forms, cookies, headers.

Multipart forms are parsed by python-multipart (the parser Starlette and FastAPI use): image
uploads need multipart/form-data, which the standard library no longer parses (``cgi`` left in
Python 3.13). Urlencoded forms are the standard library's (``parse_qsl``), which decodes them.
Uploaded files are kept in memory only (MAX_MEMORY_FILE_SIZE is the body limit), so a probe
image never touches the disk.

Every response carries the security headers (:func:`security_headers`): a Content Security
Policy without inline scripts, no framing, no sniffing, no referrer to other sites, and ``no-store`` on
every page (they show faces, matches and who is signed in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import create_form_parser

SESSION_COOKIE = "faceaudit_console"
SIGN_IN_COOKIE = "faceaudit_console_sign_in"  # the sign-in form's own CSRF token (no session yet)

# Pages draw only from /console/static; audit reports add inline styles (their SVG plots carry
# style attributes), never scripts. Forms post only to this origin; nothing may frame a page.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'{inline}; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class FormError(ValueError):
    """A form that cannot be read (malformed, too many fields, a field too large)."""


@dataclass
class Upload:
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Upload] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)


@dataclass
class Request:
    method: str
    path: str  # below the mount point, e.g. "/collections"
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; the last value of a repeated header
    cookies: dict[str, str]
    client: str
    https: bool
    body: bytes = b""
    body_read: bool = False
    max_fields: int = 20  # the route's: a review decision has two fields per candidate
    _form: Form | None = field(default=None, repr=False)

    @classmethod
    def from_scope(cls, scope: dict[str, Any], path: str) -> Request:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1"),
                                                   max_num_fields=50).items()}
        except ValueError:  # more fields than any page takes: none of them is read
            query = {}
        cookies: dict[str, str] = {}
        if "cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers["cookie"])
            except CookieError:
                pass  # a malformed Cookie header carries no session
            cookies = {name: morsel.value for name, morsel in jar.items()}
        client = scope.get("client") or ("-", 0)
        return cls(scope["method"], path, query, headers, cookies, str(client[0]),
                   scope.get("scheme") == "https")

    def form(self) -> Form:
        """The body as a form (urlencoded or multipart); FormError if it is not one."""
        if self._form is not None:
            return self._form
        max_fields = self.max_fields
        content_type = self.headers.get("content-type", "")
        form = Form()
        if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            raise FormError(f"expected a form, got Content-Type {content_type[:80]!r}")
        if not self.body:
            self._form = form
            return form
        if content_type.startswith("application/x-www-form-urlencoded"):
            # The standard library's parser: python-multipart hands urlencoded values over still
            # encoded ("a+b", "%2B"), and a reason or a purpose typed with spaces must arrive as typed.
            try:
                pairs = parse_qsl(self.body.decode("latin-1"), keep_blank_values=True, strict_parsing=False,
                                  encoding="utf-8", errors="replace", max_num_fields=max_fields)
            except ValueError:
                raise FormError("too many form fields") from None
            form.fields.update(pairs)
            self._form = form
            return form
        count = 0

        def on_field(item) -> None:
            nonlocal count
            count += 1
            if count > max_fields:
                raise FormError("too many form fields")
            if item.field_name is not None:
                form.fields[item.field_name.decode("utf-8", "replace")] = (item.value or b"").decode("utf-8", "replace")

        def on_file(item) -> None:
            nonlocal count
            count += 1
            if count > max_fields:
                raise FormError("too many form fields")
            item.file_object.seek(0)
            name = (item.field_name or b"").decode("utf-8", "replace")
            form.files[name] = Upload((item.file_name or b"").decode("utf-8", "replace"),
                                      None, item.file_object.read())

        headers = {"Content-Type": content_type.encode("latin-1"),
                   "Content-Length": str(len(self.body)).encode()}
        try:
            # In memory only: a probe image is never written to a temporary file.
            parser = create_form_parser(headers, on_field, on_file,
                                        config={"MAX_MEMORY_FILE_SIZE": len(self.body) + 1,
                                                "MAX_BODY_SIZE": len(self.body)})
            parser.write(self.body)
            parser.finalize()
        except (FormParserError, ValueError) as error:  # malformed multipart, bad boundary
            if isinstance(error, FormError):
                raise
            raise FormError(f"the form could not be read: {error}") from None
        self._form = form
        return form


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    inline_styles: bool = False  # audit report pages: their SVG plots use style attributes
    cache: str = "no-store"

    @classmethod
    def redirect(cls, location: str, status: int = 303) -> Response:
        return cls(status, b"", headers=[("location", location)])

    @classmethod
    def text(cls, status: int, message: str) -> Response:
        return cls(status, message.encode("utf-8"), "text/plain; charset=utf-8")

    def set_cookie(self, name: str, value: str, *, path: str, secure: bool, max_age: int | None = None) -> None:
        parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
        if secure:
            parts.append("Secure")
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        self.headers.append(("set-cookie", "; ".join(parts)))

    def clear_cookie(self, name: str, *, path: str, secure: bool) -> None:
        self.set_cookie(name, "", path=path, secure=secure, max_age=0)


def security_headers(response: Response, https: bool) -> list[tuple[str, str]]:
    headers = [
        ("content-security-policy", _CSP.format(inline=" 'unsafe-inline'" if response.inline_styles else "")),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        # Not no-referrer: with it Chromium sends "Origin: null" on this site's own form posts.
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("permissions-policy", "camera=(), microphone=(), geolocation=()"),
        ("cache-control", response.cache),
    ]
    if https:
        headers.append(("strict-transport-security", "max-age=31536000"))
    return headers
