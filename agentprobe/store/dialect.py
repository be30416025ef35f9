"""The SQL the code writes is SQLite's; this turns it into PostgreSQL's.

The rules, the queries and the migrations are written once, in the SQLite dialect the project
grew up with. PostgreSQL differs in a handful of places that the code uses, and each is rewritten
here, statement by statement (cached), outside string literals:

- placeholders: `?` and `:name` become `%s` and `%(name)s` (and a literal `%` is doubled);
- `a IS b` / `a IS NOT b` on values (SQLite's null-safe equality) become IS [NOT] DISTINCT FROM;
- `group_concat(x)` becomes `string_agg(CAST(x AS TEXT), ',')`; scalar max(a, b) / min(a, b)
  become GREATEST / LEAST; `sum(a = b)` (a count in SQLite) becomes a sum of CASE;
- LIKE is case-insensitive for ASCII in SQLite: ILIKE;
- NULLs sort first in SQLite, last in PostgreSQL: ORDER BY terms get NULLS FIRST (ASC) or NULLS
  LAST (DESC), except on columns that are never NULL (ids, seq), so their indexes still serve;
- a unary plus on a column (SQLite's "do not use an index for this") is dropped;
- INSERT OR IGNORE becomes INSERT ... ON CONFLICT DO NOTHING, BEGIN IMMEDIATE becomes BEGIN,
  `temp.` tables are `pg_temp.` ones;
- in DDL, SQLite's type names become PostgreSQL's: TEXT compares bytewise (COLLATE "C", as
  SQLite's BINARY), REAL is a double, INTEGER 64 bits, BLOB bytea; REFERENCES are dropped
  (SQLite does not enforce them here either).

Anything else is left as written: new SQL must stay within what both engines share, and the
test that scans one recording in both stores says when it does not.
"""

from __future__ import annotations

import functools
import re

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# Columns that are never NULL: ordering on them needs no NULLS clause (and keeps its index).
_NOT_NULL = {"id", "seq", "run_id", "name", "sha256", "rowid"}

_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_MARK = "\x00{}\x00"
_MARKED = re.compile(r"\x00(\d+)\x00")


def is_url(value) -> bool:
    """Does this --db value name a PostgreSQL server rather than a SQLite file?"""
    return isinstance(value, str) and value.split(":", 1)[0].lower() in ("postgresql", "postgres")


@functools.lru_cache(maxsize=4096)
def to_postgres(sql: str, named: bool = False) -> str:
    literals: list[str] = []

    def keep(m: re.Match) -> str:
        literals.append(m.group(0))
        return _MARK.format(len(literals) - 1)

    code = _LITERAL.sub(keep, sql)
    code = code.replace("%", "%%")
    if named:
        code = re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", code)
    else:
        code = code.replace("?", "%s")
    code = re.sub(r"\bIS\s+NOT\s+(?!NULL\b|TRUE\b|FALSE\b|DISTINCT\b)", "IS DISTINCT FROM ", code, flags=re.I)
    code = re.sub(r"\bIS\s+(?!NOT\b|NULL\b|TRUE\b|FALSE\b|DISTINCT\b)", "IS NOT DISTINCT FROM ", code, flags=re.I)
    code = re.sub(r"\bLIKE\b", "ILIKE", code, flags=re.I)
    code = re.sub(r"\bBEGIN\s+IMMEDIATE\b", "BEGIN", code, flags=re.I)
    code = re.sub(r"\btemp\.", "pg_temp.", code)
    # SQLite's index hint, a unary plus on a column (`+s.run_id`): PostgreSQL has no + for text.
    code = re.sub(r"(?<=[\s(=<>,])\+(?=[A-Za-z_])", "", code)
    code = _functions(code)
    code = _order_by_nulls(code)
    if re.match(r"\s*INSERT\s+OR\s+IGNORE\b", code, flags=re.I):
        code = re.sub(r"^\s*INSERT\s+OR\s+IGNORE\b", "INSERT", code, flags=re.I).rstrip().rstrip(";")
        code += " ON CONFLICT DO NOTHING"
    if re.match(r"\s*(CREATE\s+(TEMP\s+|TEMPORARY\s+)?TABLE|ALTER\s+TABLE)\b", code, flags=re.I):
        code = _ddl_types(code)
    # psycopg reads placeholders inside literals too: their % is doubled as well.
    return _MARKED.sub(lambda m: literals[int(m.group(1))].replace("%", "%%"), code)


def _ddl_types(code: str) -> str:
    # SQLite runs with foreign_keys = OFF (rows arrive in any order, bodies after their calls on
    # import): the same references on PostgreSQL would be enforced, so they are documentation only.
    code = re.sub(r"\s+REFERENCES\s+\w+\s*\(\s*\w+\s*\)", "", code, flags=re.I)
    code = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', code)
    code = re.sub(r"\bREAL\b", "DOUBLE PRECISION", code)
    code = re.sub(r"\bINTEGER\b", "BIGINT", code)
    return re.sub(r"\bBLOB\b", "BYTEA", code)


def _close(code: str, start: int) -> int:
    """Index of the parenthesis closing the one at code[start]."""
    depth = 0
    for i in range(start, len(code)):
        if code[i] == "(":
            depth += 1
        elif code[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in SQL: {code!r}")


def _split_args(text: str) -> list[str]:
    args, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[start:i])
            start = i + 1
    args.append(text[start:])
    return [a.strip() for a in args]


_FUNCTION = re.compile(r"\b(group_concat|max|min|sum)\s*\(", re.I)
# A condition at the top level of an expression: sum(x = 1) counts rows in SQLite, a type error in PostgreSQL.
_CONDITION = re.compile(r"(=|<|>|\bIS\b|\bAND\b|\bOR\b|\bLIKE\b|\bILIKE\b|\bIN\b|\bNOT\b|\bEXISTS\b|\bBETWEEN\b)",
                        re.I)


def _top_level(text: str) -> str:
    """text without what is inside its parentheses."""
    out, depth = [], 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _functions(code: str) -> str:
    out, pos = [], 0
    while True:
        m = _FUNCTION.search(code, pos)
        if not m:
            out.append(code[pos:])
            return "".join(out)
        open_at = m.end() - 1
        close_at = _close(code, open_at)
        inner = _functions(code[open_at + 1:close_at])
        args = _split_args(inner)
        name = m.group(1).lower()
        out.append(code[pos:m.start()])
        if name == "group_concat":
            distinct = ""
            first = args[0]
            if re.match(r"DISTINCT\b", first, flags=re.I):
                distinct, first = "DISTINCT ", first[len("DISTINCT"):].strip()
            sep = args[1] if len(args) > 1 else "','"
            out.append(f"string_agg({distinct}CAST({first} AS TEXT), {sep})")
        elif name == "sum":
            if _CONDITION.search(_top_level(inner)) and not re.match(r"\s*CASE\b", inner, flags=re.I):
                # NULL stays NULL (not 0), as SQLite's sum of a comparison with NULL ignores the row.
                out.append(f"sum(CASE WHEN {inner} THEN 1 WHEN NOT ({inner}) THEN 0 END)")
            else:
                out.append(f"sum({inner})")
        elif len(args) > 1:
            out.append(f"{'GREATEST' if name == 'max' else 'LEAST'}({', '.join(args)})")
        else:
            out.append(f"{m.group(1)}({inner})")
        pos = close_at + 1


_ORDER_BY = re.compile(r"\bORDER\s+BY\b", re.I)
_CLAUSE_END = re.compile(r"\b(LIMIT|OFFSET|UNION|EXCEPT|INTERSECT|WINDOW|FOR)\b", re.I)


def _order_by_nulls(code: str) -> str:
    out, pos = [], 0
    while True:
        m = _ORDER_BY.search(code, pos)
        if not m:
            out.append(code[pos:])
            return "".join(out)
        out.append(code[pos:m.end()])
        depth, i, end = 0, m.end(), len(code)
        while i < len(code):
            ch = code[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    end = i
                    break
                depth -= 1
            elif ch == ";" and depth == 0:
                end = i
                break
            elif depth == 0 and _CLAUSE_END.match(code, i) and not (i and (code[i - 1].isalnum() or code[i - 1] == "_")):
                end = i
                break
            i += 1
        terms = _split_args(code[m.end():end])
        out.append(" " + ", ".join(_nulls(t) for t in terms) + " ")
        pos = end


def _nulls(term: str) -> str:
    if re.search(r"\bNULLS\s+(FIRST|LAST)\s*$", term, flags=re.I):
        return term
    desc = re.search(r"\bDESC\s*$", term, flags=re.I)
    bare = re.sub(r"\s+(ASC|DESC)\s*$", "", term, flags=re.I).split(".")[-1].strip()
    if bare.lower() in _NOT_NULL:
        return term
    return f"{term} NULLS LAST" if desc else f"{term} NULLS FIRST"


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***: what is safe to print or store."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", url)


def mask_password(text: str, password: str | None) -> str:
    """text with every appearance of password (e.g. in a driver's error message) replaced by ***."""
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.I)
    if password:
        text = text.replace(password, "***")
    return text
