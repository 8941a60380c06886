"""Reading behaviour events from files (JSONL, JSON, CSV, Parquet) and converting public data sets.

Rows may be nested like the wire format or flat (CSV): product_id/title/product_type/category for
search-buy; product_a_id/product_a_title/... and product_b_* for co-purchase. The kind comes from a
`type` column, else from the columns present, else from the caller.

Files come from ordinary tools, so reading is forgiving about the file and strict about the rows:

- Encoding: a byte-order mark picks UTF-8, UTF-16 or UTF-32 (spreadsheets write one); without one,
  UTF-16 is recognised by its zero bytes, else the text is UTF-8. A line that is not valid in the
  encoding is a bad row naming the line and column, not the end of the file.
- CSV: the delimiter is detected on the header line (`,` `;` tab `|`: csv.Sniffer, and the one that
  splits the header into most columns); column names and cells are stripped of surrounding spaces;
  blank rows are skipped. A quoted cell may span lines (a spreadsheet's line break in a cell); a
  record that spans lines and is not CSV (a quote never closed, text after a closing quote) or has
  more cells than the header is an error of its first line only, and the lines after it are read
  again, so one stray quote does not take the rows below it along. A JSON file is JSON lines, or
  one array when it starts with `[`.
- Parquet: pandas' index columns (`__index_level_0__`) are dropped.
- Values: ids (event_id, session_id, product ids) and texts written as numbers are text (123 and
  123.0 -> "123"; 12.5 or a float past 2**53 is an error); NaN is an empty cell. An empty cell (or
  null, or only whitespace and invisible characters) in an optional field (session_id, product_type,
  category, clicked, added_to_cart, purchased, type, schema_version) means the field is missing; in
  a required one (event_id, event_time, query, product ids and titles) it is an error naming the
  column. Every error of a row names its place: "line N" (text files: the line the record starts
  on), "row N" (Parquet, 1-based), "item N" (a JSON array).

`read_rows` raises SourceError only when the file itself cannot be read (missing, unknown format,
binary, no usable CSV header, a corrupt Parquet file); a bad row is a Row with an error, and
`row_to_event` raises EventError for it.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Iterator

from processors.events import EventError, normalize_text, parse_event, stable_id
from processors.product_type import guess_type

_PRODUCT_FIELDS = ("product_id", "title", "product_type", "category")
_FLAGS = ("clicked", "added_to_cart", "purchased")
_BOOL = {"true": True, "1": True, "yes": True, "y": True, "t": True,
         "false": False, "0": False, "no": False, "n": False, "f": False}
_SIDES = ("product_a_", "product_b_")
# Top-level columns (flat product columns included) and product fields, by what an empty value means.
_OPTIONAL = {"session_id", "type", "schema_version", *_FLAGS, "product_type", "category",
             *(f"{s}{f}" for s in _SIDES for f in ("product_type", "category"))}
_REQUIRED = {"event_id", "event_time", "query", "product", "product_a", "product_b", "product_id", "title",
             *(f"{s}{f}" for s in _SIDES for f in ("id", "title"))}
_KNOWN = _OPTIONAL | _REQUIRED
_STRINGS = {"event_id", "session_id", "query", *_PRODUCT_FIELDS,
            *(f"{s}{f}" for s in _SIDES for f in ("id", "title", "product_type", "category"))}
_NESTED = ("product", "product_a", "product_b")
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")
_DELIMITERS = ",;\t|"
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what the decoders below leave for bytes they cannot read
_MARK = "intentflow.undecodable"


def _mark_undecodable(err: UnicodeDecodeError) -> tuple[str, int]:
    return "\udc80", err.end


codecs.register_error(_MARK, _mark_undecodable)


class SourceError(ValueError):
    """The file itself cannot be read (missing, unknown format, binary, no usable header, corrupt);
    the message names the file and, where it can, the line."""


@dataclass(frozen=True)
class Row:
    """One record of a file.

    fields: the record as a dict (None when it could not be read at all); where: its place,
    "line N" / "row N" / "item N" (1-based; number is N); error: why it could not be read, already
    prefixed with `where`; raw: its original text (text files), for the dead letter."""

    fields: dict | None
    where: str = ""
    number: int = 0
    error: str | None = None
    raw: str | None = None


# --- reading --------------------------------------------------------------------------------


def read_rows(path: str | Path) -> Iterator[Row]:
    """The records of a JSONL/JSON, CSV/TSV or Parquet file, in order, as Rows (see the module
    docstring for what is detected and forgiven). Bad records are Rows with an `error`; raises
    SourceError only when the file itself cannot be read (before the first row, or at the point a
    corrupt file stops being readable)."""
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as e:
        raise SourceError(f"{path}: cannot open: {e.strerror or e}") from None
    with f:
        try:
            head = f.read(8192)
        except OSError as e:
            raise SourceError(f"{path}: cannot read: {e.strerror or e}") from None
        if not head.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):  # nothing but blanks (and a BOM)
            raise SourceError(f"{path}: the file is empty: not a header, not an event")
        fmt = _format(path, head)
        if fmt == "parquet":
            f.close()
            yield from _parquet_rows(path)
            return
        encoding = _encoding(path, head)
        f.seek(0)
        errors = "surrogateescape" if encoding.startswith("utf-8") else _MARK
        text = io.TextIOWrapper(f, encoding=encoding, errors=errors, newline="")
        try:
            if fmt == "csv":
                yield from _csv_rows(text, path, encoding)
            else:
                yield from _json_rows(text, path, encoding)
        except OSError as e:
            raise SourceError(f"{path}: cannot read: {e.strerror or e}") from None


def _format(path: Path, head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"PK\x03\x04"):
        raise SourceError(f"{path}: a ZIP archive (an Excel workbook?), not CSV, JSON or Parquet: save it as CSV")
    if head.startswith(b"\x1f\x8b"):
        raise SourceError(f"{path}: gzip-compressed: decompress it first")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "json"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        raise SourceError(f"{path}: not a Parquet file (it does not start with PAR1)")
    raise SourceError(f"{path}: unknown format {suffix or '(no suffix)'} (use .jsonl, .json, .csv, .tsv or .parquet)")


def _encoding(path: Path, head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in head:  # text in UTF-16 without a BOM has a zero in every other byte (ASCII)
        even, odd = head[0::2], head[1::2]
        if even.count(0) == 0 and odd.count(0) * 3 > len(odd):
            return "utf-16-le"
        if odd.count(0) == 0 and even.count(0) * 3 > len(even):
            return "utf-16-be"
        try:  # a stray NUL in UTF-8 text is a bad cell, not a binary file
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError:
            raise SourceError(f"{path}: binary data (zero bytes and no text encoding), not a text file") from None
    return "utf-8"


def _undecodable(raw: str, first_line: int, encoding: str) -> str | None:
    m = _UNDECODABLE.search(raw)
    if m is None:
        return None
    i = m.start()
    line = first_line + raw.count("\n", 0, i)
    col = i - (raw.rfind("\n", 0, i) + 1) + 1
    name = "UTF-8" if encoding.startswith("utf-8") else encoding.upper()
    at = f"column {col}" if line == first_line else f"line {line}, column {col}"  # a record over lines
    return f"line {first_line}: not {name} text (undecodable bytes at {at}); save the file as UTF-8"


def _json_name(v: object) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(v), type(v).__name__)


def _json_rows(text: io.TextIOWrapper, path: Path, encoding: str) -> Iterator[Row]:
    lines = iter(text)
    n = 0
    for line in lines:  # up to the first line with content: an array, or JSON lines
        n += 1
        if line.strip("\ufeff \t\r\n"):
            break
    else:
        return
    if line.lstrip("\ufeff \t").startswith("["):
        yield from _json_array(line + "".join(lines), n, path, encoding)
        return
    for line in itertools.chain([line], lines):
        where = f"line {n}"
        body = line.strip().lstrip("\ufeff")  # a BOM mid-file: files concatenated
        if body:
            yield _json_line(body, line, n, where, encoding)
        n += 1


def _json_line(body: str, line: str, n: int, where: str, encoding: str) -> Row:
    raw = line.rstrip("\r\n")
    bad = _undecodable(line, n, encoding)
    if bad:
        return Row(None, where, n, bad, raw)
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as e:
        return Row(None, where, n, f"{where}: not JSON: {e}", raw)
    if not isinstance(obj, dict):
        return Row(None, where, n, f"{where}: expected a JSON object, got {_json_name(obj)}", raw)
    return Row(obj, where, n, None, raw)


def _json_array(doc: str, first_line: int, path: Path, encoding: str) -> Iterator[Row]:
    bad = _undecodable(doc, first_line, encoding)
    if bad:
        raise SourceError(f"{path}: {bad}")
    try:
        items = json.loads(doc)
    except (ValueError, RecursionError) as e:
        raise SourceError(f"{path}: not a JSON array: {e}") from None
    for i, obj in enumerate(items, 1):
        where = f"item {i}"
        if isinstance(obj, dict):
            yield Row(obj, where, i)
        else:
            yield Row(None, where, i, f"{where}: expected a JSON object, got {_json_name(obj)}", json.dumps(obj))


class _Lines:
    """The lines of a text stream, counted, keeping the lines of the current record (its raw text)."""

    def __init__(self, text: Iterable[str]) -> None:
        self.it, self.n, self.buf, self.back = iter(text), 0, [], []

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        line = self.back.pop() if self.back else next(self.it)
        self.n += 1
        self.buf.append(line)
        return line

    def take(self) -> str:
        raw, self.buf = "".join(self.buf), []
        return raw

    def take_first(self) -> str:
        """The current record's first line; its other lines are read again (a broken multi-line record)."""
        first, rest = self.buf[0], self.buf[1:]
        self.back.extend(reversed(rest))
        self.n -= len(rest)
        self.buf = []
        return first


def _dialect(header: str) -> type[csv.Dialect]:
    """The header line's delimiter among , ; tab |: csv.Sniffer's, unless another splits the header
    into more columns (the Sniffer prefers "," when a line holds several candidates)."""
    try:
        sniffed = csv.Sniffer().sniff(header, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        sniffed = ","
    width = {d: len(next(csv.reader([header], delimiter=d))) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: (width[d], d == sniffed))

    class Dialect(csv.excel):
        delimiter = best
        skipinitialspace = True
        strict = True  # a quote never closed is an error, not the rest of the file in one cell

    return Dialect


def _broken_record(record_lines: list[str], cells: list[str], dialect: type[csv.Dialect], width: int,
                   start: int) -> str | None:
    """Why a record read over several lines is a quote left open rather than one with a line break
    in a cell (its cells past the header's, or a later line that is a row of its own), or None."""
    if len(record_lines) < 2:
        return None
    if len(cells) > width and any(c.strip() for c in cells[width:]):
        return (f"{len(cells)} cells over several lines, but the header has {width} columns (a quote opened on "
                "this line closes lines later; the lines after it are read again)")
    inner = _rows_inside(record_lines, dialect, width)
    if inner:
        return (f"a quote opened on this line runs over line {start + inner}, which is a row of its own ({width} "
                "cells, as the header); the lines after this one are read again")
    return None


def _rows_inside(record_lines: list[str], dialect: type[csv.Dialect], width: int) -> int:
    """For a record over several lines: the first of its later lines (1-based, after the first) whose
    part inside the quoted cell it starts in (up to the quote that closes it, or the whole line)
    splits into exactly the header's width on its own, else 0. A line break in a quoted cell is a spreadsheet's
    line break in a title; a whole row there is a quote left open (`"Monitor 24` ... `LG Monitor 27"`),
    which would otherwise swallow the rows in between. (A title holding a line that is a whole row
    of the file's shape is read the same way: ambiguous, and the safer reading.)"""
    if width < 3:
        return 0

    class Loose(dialect):  # a piece of a line on its own: its quotes may not pair up
        strict = False

    for i, line in enumerate(record_lines[1:], 1):
        # a later line of a record starts inside a quoted cell: its part up to the closing quote
        inside = _before_close(line, dialect.quotechar)
        cells = next(csv.reader([inside.rstrip("\r\n")], Loose), [])
        if len(cells) == width and sum(1 for c in cells if c.strip()) >= 2:
            return i
    return 0


def _before_close(line: str, quote: str) -> str:
    """A line that starts inside a quoted cell, up to the quote that closes it (a doubled quote is one
    quote character inside the cell)."""
    i = 0
    while (j := line.find(quote, i)) >= 0:
        if line[j + 1: j + 2] == quote:
            i = j + 2
            continue
        return line[:j]
    return line


def _csv_rows(text: io.TextIOWrapper, path: Path, encoding: str) -> Iterator[Row]:
    lines = _Lines(text)
    for first in lines:
        if first.strip("\ufeff \t\r\n"):
            break
        lines.take()
    else:
        return
    start = lines.n
    first = first.lstrip("\ufeff")
    bad = _undecodable(first, start, encoding)
    if bad:
        raise SourceError(f"{path}: the header: {bad}")
    dialect = _dialect(first.rstrip("\r\n"))
    lines.buf, lines.n = [], lines.n - 1  # the header line is read again, by the reader, from `lines`
    lines.back.append(first)  # (not a chain: a chain that has ended stays ended, and lines are read again)
    reader = csv.reader(lines, dialect)
    try:
        header = next(reader)
    except csv.Error as e:
        raise SourceError(f"{path}: line {start}: the header is not CSV: {e}") from None
    lines.take()
    names = [_column(h.strip().lstrip("\ufeff")) for h in header]
    dup = next((h for h in names if h and names.count(h) > 1), None)
    if dup:
        raise SourceError(f"{path}: line {start}: column {dup!r} appears twice in the header")
    if not any(h in _KNOWN for h in names):
        raise SourceError(f"{path}: line {start}: no known column in the header {names[:6]} (separator "
                          f"{dialect.delimiter!r}); expected event_id, event_time, query, product_id, title, "
                          f"... or product_a_id, product_b_id, ...")
    width = len(names)
    while True:
        start = lines.n + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            cells, broken = [], f"not CSV: {e}" + (" (a quote opened on this line runs over the next lines, which "
                                                   "are read again)" if len(lines.buf) > 1 else "")
        else:
            broken = _broken_record(lines.buf, cells, dialect, width, start)
        if broken:  # its first line is the error; a record over several lines gives the others back
            raw = lines.take_first() if len(lines.buf) > 1 else lines.take()
            yield Row(None, f"line {start}", start, f"line {start}: {broken}", raw.rstrip("\r\n"))
            continue
        raw = lines.take()
        if not any(c.strip() for c in cells):  # blank line, or a row of empty cells
            continue
        where = f"line {start}"
        raw_line = raw.rstrip("\r\n")
        bad = _undecodable(raw, start, encoding)
        if bad:
            yield Row(None, where, start, bad, raw_line)
            continue
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            yield Row(None, where, start, f"{where}: {len(cells)} cells, but the header has {width} columns "
                                          f"(separator {dialect.delimiter!r})", raw_line)
            continue
        unnamed = next((i for i, (h, c) in enumerate(zip(names, cells), 1) if not h and c.strip()), None)
        if unnamed:
            yield Row(None, where, start, f"{where}: a value in column {unnamed}, which has no name in the header",
                      raw_line)
            continue
        cells += [""] * (width - len(cells))  # a short row: the cells it lacks are empty
        yield Row({h: c for h, c in zip(names, cells) if h}, where, start, None, raw_line)


def _column(name: str) -> str:
    """A header cell as the field it names: "Event_ID" and "event id" are event_id (spreadsheet
    headers); a name that is no field stays as written (the contract rejects it by that name)."""
    k = "_".join(name.lower().split())
    return k if k in _KNOWN else name


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        # pandas writes its index as columns: unnamed ones as __index_level_N__, named ones under
        # their name (listed in the file's pandas metadata); an index is kept only when it is an
        # event field (df.set_index("event_id")), anything else is the frame's row labels
        index = {c for c in (pf.schema_arrow.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
        columns = [c for c in pf.schema_arrow.names
                   if not _PANDAS_INDEX.fullmatch(c) and (c not in index or c in _KNOWN)]
        batches = pf.iter_batches(batch_size=10000, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise SourceError(f"{path}: not a readable Parquet file: {e}") from None
    n = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as e:
            raise SourceError(f"{path}: unreadable from row {n + 1} on: {e}") from None
        try:
            records = batch.to_pylist()
        except (pa.ArrowException, ValueError, OverflowError):  # a value Python cannot hold: find the row
            records = None
        for i in range(batch.num_rows):
            n += 1
            if records is not None:
                yield Row(records[i], f"row {n}", n)
                continue
            try:
                yield Row(batch.slice(i, 1).to_pylist()[0], f"row {n}", n)
            except (pa.ArrowException, ValueError, OverflowError) as e:
                yield Row(None, f"row {n}", n, f"row {n}: unreadable value: {e}")


# --- rows to events -----------------------------------------------------------------------


class _Empty:
    pass


_EMPTY = _Empty()


def _text_value(shown: str, v: object) -> object:
    """An id or text written as a number by a tool (Parquet/pandas, JSON) as text."""
    if isinstance(v, bool):
        raise EventError(f"{shown}: {v} is not text")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (float, Decimal)):
        if math.isfinite(v) and v == int(v) and abs(v) < 2 ** 53:
            return str(int(v))
        raise EventError(f"{shown}: the number {v} is not an id or text (store ids as text)")
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            raise EventError(f"{shown}: bytes that are not UTF-8 text") from None
    return v


def _blank(v: object) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    if isinstance(v, str):
        try:
            return not normalize_text(v)
        except ValueError:
            return False  # not Unicode: validation says so, naming the field
    return False


def _clean(name: str, v: object, shown: str) -> object:
    """A cell as the contract takes it, or _EMPTY for a missing optional field; raises EventError
    for an empty required one."""
    if _blank(v):
        if name in _OPTIONAL:
            return _EMPTY
        if name in _REQUIRED:
            raise EventError(f"{shown} is empty (a required field)")
        return v  # an unknown column: the contract rejects it by name
    if isinstance(v, str):
        v = v.strip()
    if name in _STRINGS:
        return _text_value(shown, v)
    if name in _FLAGS and isinstance(v, str):
        if v.lower() not in _BOOL:
            raise EventError(f"{name}: not a boolean: {v!r}")
        return _BOOL[v.lower()]
    if name == "schema_version" and isinstance(v, (str, float)):
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if math.isfinite(f) and f == int(f) else v
    return v


def _clean_row(row: dict) -> dict:
    out = {}
    for name, v in row.items():
        name = str(name)
        if name in _NESTED and isinstance(v, dict):
            v = {str(k): x for k, x in v.items()}
            v = {k: x for k, x in ((k, _clean(k, x, f"field '{name}.{k}'")) for k, x in v.items()) if x is not _EMPTY}
        else:
            v = _clean(name, v, f"column {name!r}")
        if v is not _EMPTY:
            out[name] = v
    return out


def _nest(row: dict, prefix: str) -> dict | None:
    """Pop flat product columns: product_id/title/... or, with prefix product_a_, product_a_id/product_a_title/..."""
    names = {f: (f"{prefix}id" if prefix and f == "product_id" else f"{prefix}{f}") for f in _PRODUCT_FIELDS}
    keys = {f: row.pop(col) for f, col in names.items() if col in row}
    return keys or None


def row_to_event(row: Row | dict, kind: str | None = None):
    """A file row (a Row from read_rows, or a plain dict) as a validated, normalised event.

    Empty optional fields are dropped, empty required ones are errors, numeric ids become text (see
    the module docstring). Raises EventError saying what is wrong, prefixed with the row's place
    ("line 7: ...") when it is known; nothing else."""
    where = ""
    if isinstance(row, Row):
        if row.error is not None:
            raise EventError(row.error)
        where, row = row.where, row.fields or {}
    try:
        return _to_event(row, kind)
    except EventError as e:
        raise EventError(f"{where}: {e}" if where else str(e)) from None


def _to_event(row: dict, kind: str | None):
    if not isinstance(row, dict):
        raise EventError(f"expected an object, got {_json_name(row)}")
    row = _clean_row(row)
    kind = row.get("type") or kind or ("co_purchase" if ("product_a" in row or "product_a_id" in row) else "search_buy")
    row["type"] = kind
    if kind == "search_buy" and "product" not in row:
        p = _nest(row, "")
        if p:
            row["product"] = p
    if kind == "co_purchase":
        for side in ("a", "b"):
            if f"product_{side}" not in row:
                p = _nest(row, f"product_{side}_")
                if p:
                    row[f"product_{side}"] = p
    return parse_event(row)
def intentionqa_events(path: str | Path, events_per_pair: int = 2, start: datetime | None = None,
                       limit: int | None = None) -> Iterator[dict]:
    """IntentionQA task-1 problems (real Amazon co-purchase pairs) as co-purchase events.

    Each distinct (item A, item B) pair was a frequent co-purchase in the source data; it becomes
    `events_per_pair` events from different sessions, a second apart, with deterministic ids.
    Product types are guessed from titles (the data set gives none).
    """
    start = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
    seen: set[tuple[str, str]] = set()
    t = 0
    with Path(path).open() as f:
        for line in f:
            d = json.loads(line)
            pair = tuple(sorted((d["item_a_id"], d["item_b_id"])))  # (A, B) and (B, A) are one pair
            if pair in seen or pair[0] == pair[1]:
                continue
            seen.add(pair)
            if limit is not None and len(seen) > limit:
                return
            for k in range(events_per_pair):
                t += 1
                yield {
                    "type": "co_purchase",
                    "event_id": f"iqa-{stable_id(*pair, k)}",
                    "event_time": (start + timedelta(seconds=t)).isoformat(),
                    "session_id": f"iqa-s{stable_id(*pair, k, 's')}",
                    "product_a": _iqa_product(d["item_a_id"], d["item_a_name"]),
                    "product_b": _iqa_product(d["item_b_id"], d["item_b_name"]),
                }


def _iqa_product(pid: str, title: str) -> dict:
    import html

    title = html.unescape(title)
    p = {"product_id": pid, "title": title}
    t = guess_type(title)
    if t:
        p["product_type"] = t
    return p

