"""``expsvc ui``: a read-only local server of the experiment list and the report pages.

Standard library only (``http.server.ThreadingHTTPServer``).  The store is opened read-only (a SQLite file
through a ``mode=ro`` URI, PostgreSQL sessions in read-only transactions), and the server has no route that
writes.  Every query parameter is untrusted: only ``GET``/``HEAD`` of ``/`` and ``/experiment`` exist (no file
is ever served, so no path can be traversed), values are length-limited, filters go through the
``--where`` grammar (bound parameters, no SQL text), every stored string is escaped, scripts run only with
the response's nonce (Content-Security-Policy), and an error is a plain page with one line, never a traceback.
"""

from __future__ import annotations

import html
import ipaddress
import os
import secrets
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from expsvc.errors import ExpsvcError, one_line

MAX_QUERY = 8_000
"""Longest query string accepted (characters)."""
MAX_VALUE = 2_000
"""Longest single query value accepted (a filter, a name)."""
PARAMS = {"/": set(), "/experiment": {"name", "where", "by", "baseline", "metric", "pool", "study"}}
"""The routes and the query parameters each accepts (anything else is refused)."""


class ServeError(ExpsvcError):
    """A bad ``--host`` or a request the server refuses."""


def check_host(host: str) -> str:
    """``host`` if it is an IP address or a name that resolves; else ServeError (one line)."""
    text = host.strip()
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if not text or len(text) > 253 or any(not (c.isalnum() or c in "-.") for c in text):
        raise ServeError(f"--host {host!r}: give an IP address (127.0.0.1, ::1, 0.0.0.0) or a host name")
    try:
        socket.getaddrinfo(text, None)
    except OSError as err:
        raise ServeError(f"--host {host!r}: cannot resolve it ({err.strerror or err})") from None
    return text


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (only this machine can connect)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def _local_host_header(value: str) -> bool:
    """Whether a request's Host header names this machine (``localhost[:port]``, ``127.0.0.1``, ``[::1]``...):
    a loopback server refuses other names, so a page on another site cannot reach it through DNS rebinding."""
    text = value.strip().lower()
    host = text[1:text.index("]")] if text.startswith("[") and "]" in text else text.rsplit(":", 1)[0] \
        if text.count(":") == 1 else text
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """``host`` as written in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


def open_read_only(db: str | None) -> Any:
    """The store at ``db`` (or the default), opened so that nothing can be written through it.

    SQLite: a ``mode=ro`` URI (still sees what running experiments write, through the WAL); other backends:
    every transaction ``READ ONLY``.  Never created, migrated or swept for stale runs.
    """
    import sqlalchemy as sa

    from expsvc.store import RunStore
    from expsvc.store.engine import make_engine, sqlite_path

    url = db or os.environ.get("EXPSVC_DB") or None
    store = RunStore.open(url, create=False, upgrade=False, mark_stale=False, verify=False)
    path = sqlite_path(store.url)
    if path is not None and store.read_only is None:
        url = store.url
        store.close()
        store = RunStore(url, make_engine(url, read_only="mode=ro"), verified=True,
                         read_only="opened read-only by expsvc ui")
    elif path is None:
        @sa.event.listens_for(store.engine, "connect")
        def _read_only(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cur.close()

        store.engine.dispose()
    return store


# ------------------------------------------------------------------------------------------------- pages


def _page(title: str, body: str, *, nonce: str = "") -> str:
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>body{{font:14px system-ui,sans-serif;max-width:1100px;margin:20px auto;padding:0 16px}}"
            f"td,th{{padding:3px 10px;border-bottom:1px solid #e6e9ee;text-align:left}}th{{background:#f4f6f8}}"
            f"table{{border-collapse:collapse}}.muted{{color:#5b6673}}</style></head><body>{body}</body></html>")


def error_page(status: int, message: str) -> str:
    """A plain page: the status and the message (escaped; a ``--where`` error keeps its caret line), never a
    traceback."""
    phrase = HTTPStatus(status).phrase
    text = message if message.count("\n") < 4 and len(message) < 2_000 else one_line(message)
    return _page(f"{status} {phrase}", f"<h1>{status} {html.escape(phrase)}</h1><pre id=\"error\">"
                                       f"{html.escape(text)}</pre><p><a href=\"/\">experiments</a></p>")


def list_page(store: Any) -> str:
    """Every experiment: name (linking to its report), runs by status, tags, description, created."""
    from expsvc.store.experiments import list_experiments

    rows = []
    for e in list_experiments(store):
        info = e.to_dict()
        counts = ", ".join(f"{n} {s}" for s, n in sorted((info.get("statuses") or {}).items()))
        link = f"/experiment?name={quote(e.name, safe='')}"
        rows.append(
            f"<tr><td><a href=\"{html.escape(link)}\">{html.escape(e.name)}</a></td>"
            f"<td>{e.runs}</td><td>{html.escape(counts)}</td>"
            f"<td>{html.escape(', '.join(info.get('tags') or []))}</td>"
            f"<td>{html.escape(str(info.get('description') or ''))}</td>"
            f"<td>{_when(e.created_at)}</td><td>{_when(e.last_run)}</td></tr>")
    head = ("<table id=\"experiments\"><tr><th>experiment</th><th>runs</th><th>by status</th><th>tags</th>"
            "<th>description</th><th>created</th><th>last run queued</th></tr>")
    table = head + "".join(rows) + "</table>" if rows else "<p>No experiment in this store yet.</p>"
    return _page("expsvc ui: experiments", "<h1>Experiments</h1><p class=\"muted\">Read-only view of "
                 f"{html.escape(repr(store))}; a report lists compare's answer, curves and runs.</p>" + table
                 + _studies_table(store))


def _studies_table(store: Any) -> str:
    """The ``expsvc tune`` studies (linking to their report: the confirmation's answer, the tuning's
    sensitivity with the chosen values marked); nothing when the store has none."""
    from expsvc.store.studies import list_studies

    rows = []
    for s in list_studies(store):
        choices = "; ".join(f"{k}: " + ", ".join(f"{p}={v:g}" if isinstance(v, float) else f"{p}={v}"
                                                  for p, v in c.get("settings", {}).items())
                            for k, c in ((s.selection or {}).get("choices") or {}).items())
        name = html.escape(s.name)
        if s.confirmation_experiment and s.selection is not None:
            name = f"<a href=\"{html.escape('/experiment?study=' + quote(s.name, safe=''))}\">{name}</a>"
        rows.append(f"<tr><td>{name}</td><td>{html.escape(s.status)}</td><td>{html.escape(choices)}</td>"
                    f"<td>{html.escape(s.tuning_experiment or '')}</td>"
                    f"<td>{html.escape(s.confirmation_experiment or '')}</td><td>{_when(s.created_at)}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Studies (expsvc tune)</h2><table id=\"studies\"><tr><th>study</th><th>status</th><th>chosen</th>"
            "<th>tuning</th><th>confirmation</th><th>created</th></tr>" + "".join(rows) + "</table>")


def _when(moment: Any) -> str:
    """A stored time as ``YYYY-MM-DD HH:MM`` (escaped), or a dash."""
    return html.escape(moment.strftime("%Y-%m-%d %H:%M")) if moment is not None else "–"


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    if not values:
        return None
    if len(values) > 1 and key != "metric":
        raise ServeError(f"query parameter {key!r} given {len(values)} times; give it once")
    return values[0]


def report_page(store: Any, query: dict[str, list[str]], refresh: int) -> str:
    """The report of ``?name=`` (with ``where``, ``by``, ``baseline``, ``metric``, ``pool``), as ``expsvc report``
    writes it, plus a link back; reloaded every ``refresh`` seconds while runs are queued or running."""
    from expsvc.report import data
    from expsvc.report import html as page

    study = _one(query, "study")
    if study is not None:
        if set(query) - {"study"}:
            raise ServeError("?study=NAME takes no other parameter")
        report = data.build_study(store, study, strict=False)
        return page.render(report, nav="<nav><a href=\"/\">← all experiments</a></nav>")
    name = _one(query, "name")
    if name is None:
        raise ServeError("give ?name=EXPERIMENT or ?study=NAME")
    by = _one(query, "by")
    keys = [k.strip() for k in by.split(",") if k.strip()] if by else None
    pool = _one(query, "pool")
    if pool not in (None, "0", "1"):
        raise ServeError(f"pool={pool!r}: allowed: 0 or 1")
    selection = data.Selection(experiment=name, where=_one(query, "where"), by=keys, pool=pool == "1",
                               metrics=query.get("metric"), baseline=_one(query, "baseline"))
    report = data.build(store, selection, strict=False)
    if report["running"]:
        report["refresh"] = refresh
    where = html.escape(selection.where or "", quote=True)
    nav = ("<nav><a href=\"/\">← all experiments</a> <form method=\"get\" action=\"/experiment\" "
           "style=\"display:inline;margin-left:16px\"><input type=\"hidden\" name=\"name\" "
           f"value=\"{html.escape(name, quote=True)}\"><label>filter runs (--where) <input name=\"where\" "
           f"size=\"50\" value=\"{where}\" placeholder=\"params.lr &lt; 0.1 and status = 'finished'\"></label> "
           "<button>apply</button></form></nav>")
    return page.render(report, nav=nav)


# ------------------------------------------------------------------------------------------------ server


class Handler(BaseHTTPRequestHandler):
    """GET/HEAD of the list and the report pages; everything else is refused."""

    server: UiServer
    server_version = "expsvc-ui"
    sys_version = ""
    timeout = 60  # seconds a client may take to send its request (a stalled one does not hold a thread forever)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _send(self, status: int, body: str, head: bool = False) -> None:
        data = body.encode("utf-8")
        nonce = getattr(self, "_nonce", "")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy",
                         f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
                         "img-src data: blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _respond(self, head: bool) -> None:
        self._nonce = secrets.token_urlsafe(16)
        try:
            status, body = 200, self._route()
        except (ServeError, ExpsvcError) as err:
            status, body = 400, error_page(400, str(err))
        except PermissionError as err:
            status, body = 403, error_page(403, str(err))
        except LookupError as err:
            status, body = 404, error_page(404, str(err.args[0]) if err.args else "not found")
        except Exception as err:  # the one catch-all: a request must never crash the server or leak a traceback
            status, body = 500, error_page(500, f"internal error ({type(err).__name__}); see the server's log")
            if not self.server.quiet:
                sys.stderr.write(f"expsvc ui: {self.path[:200]!r}: {type(err).__name__}: {one_line(str(err))}\n")
        body = body.replace("<script>", f"<script nonce=\"{self._nonce}\">")
        self._send(status, body, head)

    def _route(self) -> str:
        if self.server.loopback and not _local_host_header(self.headers.get("Host", "")):
            raise PermissionError("this server answers only requests addressed to localhost (Host header "
                                  f"{self.headers.get('Host', '')[:100]!r}); a web page cannot read it by renaming "
                                  "a host to this address")
        if len(self.path) > MAX_QUERY:
            raise ServeError(f"request of {len(self.path)} characters; at most {MAX_QUERY} allowed")
        parts = urlsplit(self.path)
        if parts.path not in PARAMS:
            raise LookupError(f"no page {parts.path[:100]!r}; pages: / (experiments), /experiment?name=NAME")
        try:
            query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query),
                             errors="strict", max_num_fields=50)
        except ValueError as err:
            raise ServeError(f"bad query string: {err}") from None
        unknown = sorted(set(query) - PARAMS[parts.path])
        if unknown:
            raise ServeError(f"unknown query parameter {unknown[0][:50]!r}; allowed: "
                             f"{', '.join(sorted(PARAMS[parts.path])) or 'none'}")
        for key, values in query.items():
            for v in values:
                if len(v) > MAX_VALUE:
                    raise ServeError(f"{key}: {len(v)} characters; at most {MAX_VALUE} allowed")
        query = {k: kept for k, vs in query.items() if (kept := [v for v in vs if v.strip()])}  # blank = not given
        with self.server.lock:  # one read at a time: SQLite connections are cheap, the machine is small
            if parts.path == "/":
                return list_page(self.server.store)
            return report_page(self.server.store, query, self.server.refresh)

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _refuse(self) -> None:
        self._nonce = ""
        self._send(405, error_page(405, f"{self.command} is not allowed: expsvc ui is read-only (GET and HEAD)"))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse


class UiServer(ThreadingHTTPServer):
    """The HTTP server holding the read-only store."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: Any, refresh: int, quiet: bool) -> None:
        self.loopback = is_loopback(address[0])
        self.store = store
        self.refresh = refresh
        self.quiet = quiet
        self.lock = threading.Lock()
        super().__init__(address, Handler)


class _UiServer6(UiServer):
    address_family = socket.AF_INET6


def make_server(store: Any, host: str, port: int, *, refresh: int = 5, quiet: bool = False) -> UiServer:
    """A server bound to ``host:port`` (port 0: any free one), not yet serving."""
    cls = _UiServer6 if ":" in host else UiServer
    return cls((host, port), store, refresh, quiet)
