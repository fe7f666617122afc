"""The ``--where`` filter language: a tokenizer and a recursive-descent parser producing an AST.

The store compiles the AST to SQL (:mod:`expsvc.store.query`); nothing is evaluated and no SQL is built
from strings there: every literal becomes a bound parameter and every field maps to a fixed column of
``runs``, ``run_params``, ``metric_summaries`` or ``experiments``.  :func:`evaluate` is the reference
semantics of that compiler, in Python.  This module imports no SQL library (``runs --where`` loads it).

Grammar (EBNF; keywords are case-insensitive)::

    expr       = and_expr { "or" and_expr } ;
    and_expr   = not_expr { "and" not_expr } ;
    not_expr   = "not" not_expr | primary ;
    primary    = "(" expr ")" | condition ;
    condition  = field ( cmp_op value
                       | [ "not" ] "in" "(" value { "," value } ")"
                       | [ "not" ] "like" string ) ;
    cmp_op     = "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=" ;
    field      = "params." key | "metrics." key | stat "(" key ")" | run_field ;
    stat       = "first" | "last" | "min" | "max" | "mean" ;
    run_field  = "status" | "seed" | "updates" | "epochs" | "duration" | "experiment" | "tag" | "group" | "id" ;
    value      = [ "-" | "+" ] number | string ;
    number     = digits [ "." digits ] [ ("e" | "E") [ "+" | "-" ] digits ] | "." digits [ exponent ] ;
    string     = "'" { char | "\\" escape } "'" | '"' { char | "\\" escape } '"' ;
    key        = ident { "." ident } ;   ident = letter_or_underscore { letter_or_digit_or_underscore } ;

Semantics: ``params.<key>`` compares ``value_num`` when the literal is a number and ``value_text`` when it
is a string; ``metrics.<key>`` is the summary's ``last`` value; ``min(k)`` ... ``mean(k)`` the summary's
statistic.  The unprefixed names ``accuracy``, ``precision``, ``recall``, ``f1`` and ``mse`` mean the
test-set value (``metrics.accuracy`` is ``test_accuracy``).  A comparison with a missing value (no such
parameter, no such summary, a NaN summary, a NULL run column) is false, and ``not`` is plain boolean
negation, so ``not (x = 1)`` holds for runs without ``x``.  ``like`` is case-insensitive with the SQL
``%``/``_`` wildcards; a backslash escapes them (written ``\\\\%`` inside the quotes).  ``tag`` is the set of
the run's experiment's tags: ``tag = 'x'``, ``tag in (...)`` and ``tag like ...`` hold when some tag matches,
``tag != 'x'``, ``not in`` and ``not like`` when none does.
Limits: 2,000 characters, nesting depth 32, finite numbers.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from expsvc.errors import ExpsvcError, did_you_mean
from expsvc.store.vocab import STATS

MAX_LENGTH = 2000
MAX_DEPTH = 32
MAX_INT = 2**63 - 1

PREFIXES = ("params", "metrics")
#: unprefixed metric names that mean the test-set value
TEST_ALIASES = {"accuracy": "test_accuracy", "precision": "test_precision", "recall": "test_recall",
                "f1": "test_f1", "mse": "test_mse"}
#: run fields: name -> kind of value (``num`` or ``text``); the store maps each to its column
RUN_FIELDS: dict[str, str] = {
    "status": "text",
    "seed": "num",
    "updates": "num",
    "epochs": "num",
    "duration": "num",
    "experiment": "text",
    "tag": "text",
    "group": "text",
    "id": "text",
}
KEYWORDS = ("and", "or", "not", "in", "like")
OPERATORS = ("=", "!=", "<", "<=", ">", ">=")

#: each comparison operator as a Python function (SQLAlchemy columns overload the same operators)
COMPARATORS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


class GrammarError(ExpsvcError):
    """A ``--where`` expression that does not parse or compile; the message shows a caret under the token."""

    def __init__(self, message: str, text: str = "", pos: int = 0) -> None:
        self.message = message
        self.text = text
        self.pos = pos
        super().__init__(self._render())

    def _render(self) -> str:
        if not self.text:
            return self.message
        shown = "".join(c if c.isprintable() else " " for c in self.text)
        pos = max(0, min(self.pos, len(shown)))
        start = 0
        if len(shown) > 76:  # show a window around the offending position
            start = max(0, min(pos - 38, len(shown) - 76))
            shown = shown[start : start + 76]
        return f"{self.message}\n  {shown}\n  {' ' * (pos - start)}^"


# --------------------------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class Token:
    kind: str  # ident | keyword | number | string | op | ( | ) | , | sign | end
    value: Any
    pos: int
    text: str


_DIGITS = frozenset("0123456789")
_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*", re.ASCII)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def _describe(tok: Token) -> str:
    return "end of expression" if tok.kind == "end" else repr(tok.text)


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; raise :class:`GrammarError` at the first character that fits none."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "()," :
            tokens.append(Token(c, c, i, c))
            i += 1
        elif c in "<>=!":
            two = text[i : i + 2]
            if two in ("<=", ">=", "!=", "==", "<>"):
                op = {"==": "=", "<>": "!="}.get(two, two)
                tokens.append(Token("op", op, i, two))
                i += 2
            elif c == "!":
                raise GrammarError("unexpected '!': use '!=' or 'not'", text, i)
            else:
                tokens.append(Token("op", c, i, c))
                i += 1
        elif c in "+-":
            if text.startswith("--", i):
                raise GrammarError("comments are not allowed", text, i)
            tokens.append(Token("sign", c, i, c))
            i += 1
        elif c in "'\"":
            i = _string(text, i, tokens)
        elif c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            m = _NUMBER.match(text, i)
            assert m is not None
            end = m.end()
            if end < n and (text[end].isalnum() or text[end] in "_."):
                raise GrammarError(f"malformed number {text[i:end + 1]!r}", text, i)
            raw = m.group()
            value: float | int
            try:
                value = int(raw) if raw.isdigit() else float(raw)
                if isinstance(value, int) and value > MAX_INT:
                    value = float(value)
            except OverflowError:
                value = math.inf
            if not math.isfinite(value):
                raise GrammarError(f"number {raw!r} is out of range (must be a finite float)", text, i)
            tokens.append(Token("number", value, i, raw))
            i = end
        elif c.isascii() and (c.isalpha() or c == "_"):
            m = _IDENT.match(text, i)
            assert m is not None
            word = m.group()
            if word.lower() in KEYWORDS:
                tokens.append(Token("keyword", word.lower(), i, word))
            else:
                tokens.append(Token("ident", word, i, word))
            i = m.end()
            if i < n and text[i] == ".":
                raise GrammarError(f"malformed name {text[m.start():i + 1]!r}", text, i)
        elif c == ";":
            raise GrammarError("unexpected ';': a filter is a single expression", text, i)
        else:
            raise GrammarError(f"unexpected character {c!r}", text, i)
    tokens.append(Token("end", None, n, ""))
    return tokens


def _string(text: str, start: int, tokens: list[Token]) -> int:
    """Scan the quoted string starting at ``start``; append its token and return the index after it."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            tokens.append(Token("string", "".join(out), start, text[start : i + 1]))
            return i + 1
        if c == "\\":
            if i + 1 >= len(text):
                break
            esc = text[i + 1]
            if esc not in _ESCAPES:
                raise GrammarError(
                    f"unknown escape '\\{esc}' (allowed: \\\\ \\' \\\" \\n \\t \\r)", text, i
                )
            out.append(_ESCAPES[esc])
            i += 2
            continue
        out.append(c)
        i += 1
    raise GrammarError(f"unterminated string (missing closing {quote})", text, start)


# ------------------------------------------------------------------------------------------------ AST
@dataclass(frozen=True)
class Field:
    """A field of a run: a parameter, a summary statistic, or a run column."""

    kind: Literal["param", "summary", "run"]
    key: str
    stat: str = "last"
    pos: int = 0

    @property
    def value_kind(self) -> str:
        """``num``/``text`` for fields with a fixed type, ``any`` for parameters."""
        if self.kind == "summary":
            return "num"
        if self.kind == "run":
            return RUN_FIELDS[self.key]
        return "any"

    def __str__(self) -> str:
        if self.kind == "param":
            return f"params.{self.key}"
        if self.kind == "summary":
            return f"metrics.{self.key}" if self.stat == "last" else f"{self.stat}({self.key})"
        return self.key


@dataclass(frozen=True)
class Value:
    """A literal of the filter (a number or a string) and where it starts in the text, for error carets."""

    value: str | int | float
    pos: int

    @property
    def kind(self) -> str:
        return "text" if isinstance(self.value, str) else "num"


@dataclass(frozen=True)
class Compare:
    """``field op value``, e.g. ``params.lr < 0.01``; ``op`` is one of :data:`OPERATORS`."""

    field: Field
    op: str
    value: Value


@dataclass(frozen=True)
class InList:
    """``field [not] in (v, ...)``: the values are all numbers or all strings."""

    field: Field
    values: tuple[Value, ...]
    negated: bool


@dataclass(frozen=True)
class Like:
    """``field [not] like 'pattern'``: case-insensitive, ``%`` any run of characters, ``_`` one character,
    a backslash escapes them."""

    field: Field
    pattern: Value
    negated: bool


@dataclass(frozen=True)
class And:
    """Every item holds."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """Some item holds."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """Plain boolean negation (a missing value makes the inner condition false, so ``not`` holds)."""

    item: Node


Node = Compare | InList | Like | And | Or | Not


# --------------------------------------------------------------------------------------------- parser
def metric_key(name: str) -> str:
    """The summary key for a metric name: ``accuracy`` → ``test_accuracy`` (aliases), others unchanged."""
    return TEST_ALIASES.get(name, name)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    # helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, tok: Token | None = None) -> GrammarError:
        tok = tok or self.tok
        return GrammarError(message, self.text, tok.pos)

    def is_kw(self, word: str, offset: int = 0) -> bool:
        tok = self.tokens[min(self.i + offset, len(self.tokens) - 1)]
        return tok.kind == "keyword" and tok.value == word

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression nested too deeply (more than {MAX_DEPTH} levels)")

    # grammar
    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise GrammarError("empty expression; expected e.g. \"params.lr < 0.01 and status = 'finished'\"")
        node = self.expr()
        if self.tok.kind != "end":
            if self.tok.kind == ")":
                raise self.error("unbalanced ')': no matching '('")
            raise self.error(f"unexpected {_describe(self.tok)}: expected 'and', 'or' or end of expression")
        return node

    def chain(self, word: str, operand: Callable[[], Node], make: type[And] | type[Or]) -> Node:
        """``operand { word operand }``: a single operand as itself, several joined by ``make``."""
        items = [operand()]
        while self.is_kw(word):
            self.advance()
            items.append(operand())
        return items[0] if len(items) == 1 else make(tuple(items))

    def expr(self) -> Node:
        return self.chain("or", self.and_expr, Or)

    def and_expr(self) -> Node:
        return self.chain("and", self.not_expr, And)

    def not_expr(self) -> Node:
        if self.is_kw("not"):
            self.advance()
            self.enter()
            node: Node = Not(self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        if self.tok.kind == "(":
            self.enter()
            self.advance()
            if self.tok.kind == ")":
                raise self.error("empty parentheses: expected a condition")
            node = self.expr()
            if self.tok.kind != ")":
                raise self.error(f"expected ')' to close the '(' , found {_describe(self.tok)}")
            self.advance()
            self.depth -= 1
            return node
        return self.condition()

    def condition(self) -> Node:
        field = self.field()
        tok = self.tok
        if tok.kind == "op":
            self.advance()
            value = self.value(f"after '{tok.text}'")
            _check_type(field, value, self.text)
            return Compare(field, tok.value, value)
        negated = False
        if self.is_kw("not") and (self.is_kw("in", 1) or self.is_kw("like", 1)):
            self.advance()
            negated = True
        if self.is_kw("in"):
            self.advance()
            if self.tok.kind != "(":
                raise self.error(f"expected '(' after 'in', found {_describe(self.tok)}")
            self.advance()
            if self.tok.kind == ")":
                raise self.error("empty 'in ()' list: give at least one value")
            values = [self.value("in the 'in' list")]
            while self.tok.kind == ",":
                self.advance()
                values.append(self.value("after ','"))
            if self.tok.kind != ")":
                raise self.error(f"expected ',' or ')' in the 'in' list, found {_describe(self.tok)}")
            self.advance()
            kinds = {v.kind for v in values}
            if len(kinds) > 1:
                odd = next(v for v in values if v.kind != values[0].kind)
                raise GrammarError("an 'in' list must be all numbers or all strings", self.text, odd.pos)
            for v in values:
                _check_type(field, v, self.text)
            return InList(field, tuple(values), negated)
        if self.is_kw("like"):
            self.advance()
            pattern = self.value("after 'like'")
            if pattern.kind != "text":
                raise GrammarError("'like' needs a quoted pattern such as 'adam%'", self.text, pattern.pos)
            _check_type(field, pattern, self.text)
            return Like(field, pattern, negated)
        raise self.error(
            f"expected an operator ({', '.join(OPERATORS)}, in, not in, like) after {field}, "
            f"found {_describe(tok)}"
        )

    def field(self) -> Field:
        tok = self.tok
        if tok.kind != "ident":
            if tok.kind == "end":
                raise self.error("expression ends too early: expected a field such as params.lr")
            raise self.error(f"expected a field (params.<key>, metrics.<key>, status, ...), found {_describe(tok)}")
        self.advance()
        name = tok.value
        if self.tok.kind == "(":  # a statistic: min(loss)
            fn = name.lower()
            if fn not in STATS:
                raise self.error(f"unknown function {name!r}; allowed: {', '.join(STATS)}{did_you_mean(fn, STATS)}",
                                 tok)
            self.advance()
            arg = self.tok
            if arg.kind != "ident":
                raise self.error(f"expected a metric name inside {fn}(...), found {_describe(arg)}")
            self.advance()
            if self.tok.kind != ")":
                raise self.error(f"expected ')' after {fn}({arg.text}, found {_describe(self.tok)}")
            self.advance()
            key = arg.value.removeprefix("metrics.")
            return Field("summary", metric_key(key), fn, tok.pos)
        if "." in name:
            prefix, key = name.split(".", 1)
            if prefix == "params":
                return Field("param", key, pos=tok.pos)
            if prefix == "metrics":
                return Field("summary", metric_key(key), "last", tok.pos)
            raise self.error(
                f"unknown field prefix {prefix!r}; allowed: params.<key>, metrics.<key>"
                f"{did_you_mean(prefix, PREFIXES)}", tok)
        if name.lower() in RUN_FIELDS:
            return Field("run", name.lower(), pos=tok.pos)
        choices = [*RUN_FIELDS, *STATS, *PREFIXES]
        hint = did_you_mean(name.lower(), choices)
        raise self.error(
            f"unknown field {name!r}; allowed: params.<key>, metrics.<key>, {'/'.join(STATS)}(<key>), "
            f"{', '.join(RUN_FIELDS)}{hint}", tok)

    def value(self, where: str) -> Value:
        tok = self.tok
        if tok.kind == "sign":
            self.advance()
            num = self.tok
            if num.kind != "number":
                raise self.error(f"expected a number after '{tok.text}', found {_describe(num)}")
            self.advance()
            return Value(-num.value if tok.value == "-" else num.value, tok.pos)
        if tok.kind in ("number", "string"):
            self.advance()
            return Value(tok.value, tok.pos)
        if tok.kind == "end":
            raise self.error(f"expression ends too early: expected a value {where}")
        hint = ""
        if tok.kind in ("ident", "keyword"):
            hint = f" (quote text values: '{tok.text}')"
        raise self.error(f"expected a number or a quoted string {where}, found {_describe(tok)}{hint}")


def _check_type(field: Field, value: Value, text: str) -> None:
    kind = field.value_kind
    if kind != "any" and kind != value.kind:
        need = "a number" if kind == "num" else "a quoted string"
        raise GrammarError(f"{field} is {'numeric' if kind == 'num' else 'text'}; compare it with {need}",
                           text, value.pos)


def parse(text: str) -> Node:
    """Parse a ``--where`` expression into an AST; raise :class:`GrammarError` on any problem."""
    if not isinstance(text, str):
        raise GrammarError("the filter must be text")
    if len(text) > MAX_LENGTH:
        raise GrammarError(f"expression is {len(text):,} characters long; the limit is {MAX_LENGTH:,}")
    return _Parser(text).parse()


def parse_field(text: str) -> Field:
    """Parse a lone field (``params.lr``, ``min(loss)``, ``updates``...) as used by ``--sort``/``--metric``."""
    if len(text) > 200:
        raise GrammarError("field name too long")
    p = _Parser(text)
    if p.tok.kind == "end":
        raise GrammarError("empty field name")
    f = p.field()
    if p.tok.kind != "end":
        raise p.error(f"unexpected {_describe(p.tok)} after the field {f}")
    return f


def fields(node: Node) -> Iterable[Field]:
    """Every field an AST mentions (for checking parameter and metric keys against the database)."""
    if isinstance(node, And | Or):
        for item in node.items:
            yield from fields(item)
    elif isinstance(node, Not):
        yield from fields(node.item)
    else:
        yield node.field


# ------------------------------------------------------------------------------------------- checking
def set_condition(node: Compare | InList | Like) -> tuple[bool, Compare | InList | Like]:
    """A condition on a set-valued field (``tag``) as (negative, its positive form): ``tag = 'x'``, ``in`` and
    ``like`` hold when some member matches; ``!=``, ``not in`` and ``not like`` when no member matches."""
    if isinstance(node, Compare):
        return (True, Compare(node.field, "=", node.value)) if node.op == "!=" else (False, node)
    if isinstance(node, InList):
        return node.negated, InList(node.field, node.values, False)
    return node.negated, Like(node.field, node.pattern, False)


def check_keys(node: Node, text: str, params: Iterable[str] = (), metrics: Iterable[str] = ()) -> None:
    """Reject parameter/metric keys that no run has (when the database has any), with did-you-mean."""
    params, metrics = set(params), set(metrics)
    for f in fields(node):
        known = params if f.kind == "param" else metrics if f.kind == "summary" else None
        if known and f.key not in known:
            what = "parameter" if f.kind == "param" else "metric"
            raise GrammarError(
                f"no run has the {what} {f.key!r}{did_you_mean(f.key, known)}; known: {', '.join(sorted(known))}",
                text, f.pos)


def evaluate(node: Node, run: dict[str, Any]) -> bool:
    """Evaluate an AST on a run given as ``{"params": {...}, "summaries": {key: {stat: v}}, <run fields>}``.

    The reference semantics of the SQL compiler, used by the tests and by in-memory filtering.
    """
    if isinstance(node, And):
        return all(evaluate(n, run) for n in node.items)
    if isinstance(node, Or):
        return any(evaluate(n, run) for n in node.items)
    if isinstance(node, Not):
        return not evaluate(node.item, run)
    f = node.field
    if f.kind == "param":
        raw = run.get("params", {}).get(f.key)
        lit = node.pattern if isinstance(node, Like) else (node.value if isinstance(node, Compare) else node.values[0])
        value = _param_as(raw, lit.kind)
    elif f.kind == "summary":
        value = run.get("summaries", {}).get(f.key, {}).get(f.stat)
        if value is not None and math.isnan(value):
            value = None
    elif f.key == "tag":
        negative, positive = set_condition(node)
        return any(_holds(positive, t) for t in run.get("tags", ())) != negative
    else:
        value = run.get(f.key)
    return _holds(node, value)


def _holds(node: Compare | InList | Like, value: Any) -> bool:
    """Whether one value meets a condition (a missing value meets none)."""
    if value is None:
        return False
    if isinstance(node, Compare):
        return bool(COMPARATORS[node.op](value, node.value.value))
    if isinstance(node, InList):
        inside = value in [v.value for v in node.values]
        return inside != node.negated
    return _like(value, str(node.pattern.value)) != node.negated


def _param_as(raw: Any, kind: str) -> Any:
    """A parameter's ``value_text`` or ``value_num`` as the store writes them (numbers have both)."""
    if raw is None:
        return None
    if kind == "text":
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, float):
            return None if math.isnan(raw) else repr(raw)
        return str(raw)
    if isinstance(raw, bool | int | float):
        return None if math.isnan(float(raw)) else float(raw)
    return None


def _like(value: str, pattern: str) -> bool:
    """SQL LIKE with ``\\`` escapes (case-sensitivity as SQLite for ASCII: insensitive)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), value, flags=re.DOTALL | re.IGNORECASE) is not None
