"""Several statements in one COM_QUERY (CLIENT_MULTI_STATEMENTS) that start with a held DDL.

A migration often sends ``DROP TABLE IF EXISTS t; CREATE TABLE t (...)`` as one query. The relay
only sniffs the first keyword, so such a script reaches proxy.ddlhold when it starts with DROP
or TRUNCATE (or comments). ``split`` cuts it into statements at the top-level semicolons
(sqlglot's tokenizer: strings, quoted names and comments are respected); the holder runs them one
by one on the session's own connection, holding the DROP/TRUNCATE ones and sending the others as
they are, and ``compose`` makes the one multi-result answer the server would have sent: every
result but the last with SERVER_MORE_RESULTS_EXISTS, sequence ids running on, nothing after the
first error (the server stops there too).

A stored program's body (CREATE TRIGGER / PROCEDURE / FUNCTION / EVENT ... BEGIN ... END) holds
semicolons that end no statement: ``statements`` follows its compound blocks as the server's
parser does (BEGIN and CASE open one, END closes it; END IF / LOOP / WHILE / REPEAT / FOR close a
block that lies inside one), so the mariadb CLI's one-statement query with a body is known to be
one statement, and a script with such a CREATE in it is cut after the body's last END.

Left to the server unchanged (``split`` returns None): a stored program whose body is not one
BEGIN ... END (a bare IF ... END IF: telling it from the IF() function is the parser's work),
anonymous blocks (BEGIN NOT ATOMIC), LOAD DATA (its LOCAL INFILE exchange), blocks that do not
balance (``begin`` and ``end`` are also legal column names), or text the tokenizer rejects.
Pure functions over bytes.
"""

from __future__ import annotations

import struct

from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import SqlglotError
from sqlglot.parser import Parser
from sqlglot.tokens import TokenType

from proxy import wire

_MORE_RESULTS = int(wire.ServerStatus.SERVER_MORE_RESULTS_EXISTS)
_STORED_PROGRAMS = {"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT"}
_BLOCK_WORDS = {TokenType.BEGIN, TokenType.CASE, TokenType.END}  # CASE: the statement and the expression end in END
_UNCOUNTED_BLOCKS = {"IF", "LOOP", "WHILE", "REPEAT", "FOR"}
_NAMES = {TokenType.VAR, TokenType.IDENTIFIER}
# After these a statement starts (so may a block's BEGIN): ';', a block's BEGIN, a label's ':'...
_STATEMENT_STARTS = {";", ":", "BEGIN", "THEN", "ELSE", "DO", "LOOP", "REPEAT"}
# The words between a procedure's or function's parameters and its body.
_HEAD_TOKENS = {TokenType.L_PAREN, TokenType.R_PAREN, TokenType.COMMA, TokenType.NUMBER, TokenType.STRING,
                TokenType.COMMENT, TokenType.SQL_SECURITY, TokenType.CHARACTER_SET, TokenType.COLLATE,
                TokenType.NOT}
_HEAD_WORDS = {"RETURNS", "DETERMINISTIC", "READS", "MODIFIES", "CONTAINS", "NO", "SQL", "DATA", "LANGUAGE",
               "DEFINER", "INVOKER", "ZEROFILL", "CHARACTER", "SET", "CHARSET"}
_OPERATORS = {TokenType.EQ, TokenType.NEQ, TokenType.GT, TokenType.GTE, TokenType.LT, TokenType.LTE, TokenType.PLUS,
              TokenType.DASH, TokenType.STAR, TokenType.SLASH}
_AFTER_A_NAME = {TokenType.COMMA, TokenType.R_PAREN, TokenType.FROM, TokenType.ALIAS, *_OPERATORS}
_BEFORE_A_NAME = {TokenType.SELECT, TokenType.COMMA, TokenType.L_PAREN, TokenType.WHERE, TokenType.AND, TokenType.OR,
                  TokenType.SET, TokenType.ORDER_BY, TokenType.GROUP_BY, TokenType.HAVING, TokenType.ON, TokenType.NOT,
                  *_OPERATORS}


def split(query: bytes) -> list[bytes] | None:
    """The statements of a multi-statement query, or None if it is one statement or cannot be
    split safely (module docstring)."""
    statements = split_statements(query)
    return statements if statements is not None and len(statements) > 1 else None


def split_statements(query: bytes) -> list[bytes] | None:
    """The statements of ``query`` (one or more, without their semicolons), or None when they
    cannot be told apart safely (module docstring)."""
    try:
        text = query.decode("ascii")
        tokens = MySQL().tokenize(text)
    except (UnicodeDecodeError, SqlglotError):
        return None
    if _unreadable(text):
        return None
    pieces, start, n = [], 0, 0  # the current statement: its text from ``start``, its tokens from ``n``
    while n < len(tokens):
        if _starts_compound(tokens, n) or _is_package(tokens, n):
            return None  # IF ... END IF outside a program, a package: the server's parser's work
        end = _program_end(tokens, n) if _starts_stored_program(tokens, n) else _plain_end(tokens, n)
        if end is None:
            return None
        if end > n:  # (only comments or nothing between two semicolons: no statement)
            pieces.append(text[start : tokens[end].start if end < len(tokens) else len(text)])
        if end < len(tokens):
            start = tokens[end].end + 1
        n = end + 1
    return [p.strip().encode("ascii") for p in pieces] or None


def _unreadable(text: str) -> bool:
    """Text whose statements sqlglot's tokens do not tell: a backslash (under NO_BACKSLASH_ESCAPES
    it ends no string, so where a string ends is the session's), an executable comment (the
    server runs ``/*!...*/``, the tokenizer skips it)."""
    return "\\" in text or "/*!" in text or "/*M!" in text


def _plain_end(tokens: list, n: int) -> int | None:
    """The ';' ending the statement at ``n`` (or the end); None for LOAD DATA (its LOCAL INFILE
    exchange) and BEGIN (a transaction, or MariaDB's BEGIN NOT ATOMIC block)."""
    for m in range(n, len(tokens)):
        kind = tokens[m].token_type
        if kind == TokenType.LOAD or kind == TokenType.BEGIN:
            return None
        if kind == TokenType.SEMICOLON:
            return m
    return len(tokens)


def _program_end(tokens: list, n: int) -> int | None:
    """The ';' ending the stored program at ``n`` (or the end), read by its body's blocks; None
    when the body is not one BEGIN ... END or a block word cannot be told from a name."""
    body = _body_start(tokens, n)
    if body is None:
        return None
    if body >= len(tokens) or tokens[body].text.upper() != "BEGIN":
        # a one-statement body (a bare IF ... END IF may hold ';'): one only if no ';' follows
        return None if any(t.token_type == TokenType.SEMICOLON for t in tokens[body:]) else len(tokens)
    blocks: list[TokenType] = [TokenType.BEGIN]
    for m in range(body + 1, len(tokens)):
        if tokens[m].token_type not in _BLOCK_WORDS:
            continue
        if _follow_block(tokens, m, blocks) is None:
            return None  # BEGIN or END where a name could stand: not read by guess
        if not blocks:  # the body's END: then its label, then ';' or the end
            after = m + 1
            if after < len(tokens) and tokens[after].token_type in _NAMES:
                after += 1
            if after == len(tokens) or tokens[after].token_type == TokenType.SEMICOLON:
                return after
            return None
    return None  # never closed


def _body_start(tokens: list, n: int) -> int | None:
    """Where the body of the stored program at ``n`` begins (its label skipped): after FOR EACH
    ROW [FOLLOWS|PRECEDES t] of a trigger, DO of an event, and the parameters, RETURNS type and
    characteristics of a procedure or function; None when the head is not read."""
    m = next(m for m in range(n + 1, len(tokens)) if tokens[m].text.upper() in _STORED_PROGRAMS)
    kind = tokens[m].text.upper()
    words = [t.text.upper() for t in tokens]
    if kind == "TRIGGER":
        row = next((i for i in range(m, len(tokens) - 2) if words[i : i + 3] == ["FOR", "EACH", "ROW"]), None)
        if row is None:
            return None
        body = row + 3
        if body < len(tokens) and words[body] in ("FOLLOWS", "PRECEDES"):
            body += 2
    elif kind == "EVENT":
        body = next((i + 1 for i in range(m, len(tokens)) if words[i] == "DO"), None)
        if body is None:
            return None
    else:
        body = _after_parentheses(tokens, next((i for i in range(m, len(tokens))
                                                if tokens[i].token_type == TokenType.L_PAREN), len(tokens)))
        while body is not None and body < len(tokens) and _in_routine_head(tokens, body):
            body = _after_parentheses(tokens, body + 1) if tokens[body + 1 : body + 2] and \
                tokens[body + 1].token_type == TokenType.L_PAREN else body + 1
    if body is not None and body + 1 < len(tokens) and tokens[body + 1].token_type == TokenType.COLON:
        body += 2  # a label
    return body


def _after_parentheses(tokens: list, n: int) -> int | None:
    """The token after the parenthesis opened at ``n`` closes; None when it never does."""
    depth = 0
    for m in range(n, len(tokens)):
        depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(tokens[m].token_type, 0)
        if depth == 0:
            return m + 1
    return None


def _in_routine_head(tokens: list, n: int) -> bool:
    """A word of RETURNS type or of the characteristics (a type, its character set and
    collation, COMMENT '...', DETERMINISTIC, SQL SECURITY ...), before a procedure's or
    function's body."""
    token = tokens[n]
    if token.token_type in _HEAD_TOKENS or token.token_type in Parser.TYPE_TOKENS:
        return True
    if token.text.upper() in _HEAD_WORDS:
        return True
    previous = tokens[n - 1].token_type
    return previous in (TokenType.CHARACTER_SET, TokenType.COLLATE) and token.token_type in _NAMES


def _follow_block(tokens: list, n: int, blocks: list) -> bool | None:
    """Track the block word at ``n`` (BEGIN, CASE, END) inside a body in ``blocks``: True when
    it closed a block, False when it opened one or is none (``t.end``, END CASE's CASE, END
    IF..., START of START TRANSACTION), None when it cannot be told from a name by position.
    A block's BEGIN starts a statement (or a handler's action); its END follows a ';' or its
    BEGIN; the END of a CASE may follow an expression (``THEN 2 END``)."""
    kind = tokens[n].token_type
    before = tokens[n - 1]
    after = tokens[n + 1] if n + 1 < len(tokens) else None
    if before.token_type == TokenType.DOT or after is not None and after.token_type == TokenType.DOT:
        return False  # a qualified name
    if kind == TokenType.CASE:
        if before.token_type != TokenType.END:  # (END CASE: closed at its END)
            blocks.append(kind)
        return False
    if kind == TokenType.BEGIN:
        if tokens[n].text.upper() != "BEGIN" or after is not None and after.token_type == TokenType.COLON:
            return False  # START (TRANSACTION), or a label named begin
        if before.text.upper() not in _STATEMENT_STARTS and not _in_handler(tokens, n):
            return None
        blocks.append(kind)
        return False
    closing = after.text.upper() if after is not None else ""
    if closing in _UNCOUNTED_BLOCKS:  # END IF, END LOOP...; (REPEAT ... UNTIL cond END REPEAT)
        return False if before.token_type == TokenType.SEMICOLON or closing == "REPEAT" else None
    if not blocks or blocks[-1] == TokenType.BEGIN and before.text.upper() not in (";", "BEGIN"):
        return None
    blocks.pop()
    return True


def _in_handler(tokens: list, n: int) -> bool:
    """Whether the BEGIN at ``n`` is the action of DECLARE ... HANDLER FOR ... (the statement it
    stands in starts with DECLARE and names HANDLER)."""
    m = n - 1
    while m > 0 and tokens[m].text.upper() not in _STATEMENT_STARTS:
        m -= 1
    words = [t.text.upper() for t in tokens[m + 1 : n]]
    return words[:1] == ["DECLARE"] and "HANDLER" in words


def is_plain_statement(text: str) -> bool:
    """One statement without comments: strings and quoted names may hold ';', '#', '--' or
    '/*' (a DEFAULT '#fff'), which a search of the text would take for more."""
    tokens = _tokens(text)
    return tokens is not None and not any(t.comments or t.token_type == TokenType.SEMICOLON for t in tokens)


def _tokens(text: str) -> list | None:
    """sqlglot's tokens of ``text``; None when it cannot be read, or holds a backslash: under
    NO_BACKSLASH_ESCAPES a backslash ends no string, and where a string ends is the session's."""
    if "\\" in text:
        return None
    try:
        return MySQL().tokenize(text)
    except SqlglotError:
        return None


def has_comments(text: str) -> bool:
    """Whether ``text`` holds a comment outside its strings (or cannot be read: as if it did)."""
    tokens = _tokens(text)
    return tokens is None or any(t.comments for t in tokens)


def _starts_stored_program(tokens: list, n: int) -> bool:
    """CREATE [OR REPLACE] [DEFINER = ...] [AGGREGATE] TRIGGER | PROCEDURE | FUNCTION | EVENT."""
    if tokens[n].token_type != TokenType.CREATE:
        return False
    for m, token in enumerate(tokens[n + 1 : n + 14], n + 1):
        if token.text.upper() in _STORED_PROGRAMS:
            return True
        if token.token_type in (TokenType.SEMICOLON, TokenType.TABLE) or token.token_type == TokenType.L_PAREN and (
                tokens[m - 1].text.upper() != "CURRENT_USER"):  # (DEFINER = CURRENT_USER())
            return False
    return False


def _is_package(tokens: list, n: int) -> bool:
    """MariaDB's CREATE PACKAGE [BODY]: procedures and functions with bodies, in one statement."""
    return tokens[n].token_type == TokenType.CREATE and any(t.text.upper() == "PACKAGE" for t in tokens[n + 1 : n + 8])


def _starts_compound(tokens: list, n: int) -> bool:
    """IF / CASE / LOOP / WHILE / REPEAT / FOR, or a label: MariaDB runs these outside stored
    programs too, with ';' inside."""
    label = n + 1 < len(tokens) and tokens[n + 1].token_type == TokenType.COLON
    return label or tokens[n].token_type == TokenType.CASE or tokens[n].text.upper() in _UNCOUNTED_BLOCKS


def _ends_after_block(tokens: list, n: int, closed_at: int) -> bool:
    """The semicolon at ``n`` follows the END that closed the body (or END and its label)."""
    return closed_at >= 0 and (closed_at == n - 1 or closed_at == n - 2 and tokens[n - 1].token_type in (
        TokenType.VAR, TokenType.IDENTIFIER))


def compose(results: list[list[bytes]], deprecate_eof: bool) -> tuple[bytes, int | None]:
    """The framed answer of a multi-statement query from each statement's response payloads;
    also the status flags of the last result (None after an error)."""
    out = []
    seq = 1
    status = None
    for n, payloads in enumerate(results):
        more = n < len(results) - 1
        for i, payload in enumerate(payloads):
            last = i == len(payloads) - 1
            if more and _carries_status(payload, last, len(payloads), deprecate_eof):
                payload = _with_flag(payload, deprecate_eof and last and len(payloads) > 1)
            packets = wire.make_packets(payload, seq)
            seq = (seq + len(payload) // 0xFFFFFF + 1) & 0xFF
            out.append(packets)
        final = payloads[-1]
        status = None if final[:1] == b"\xff" else _status(final, deprecate_eof and len(payloads) > 1)
    return b"".join(out), status


def _carries_status(payload: bytes, last: bool, count: int, deprecate_eof: bool) -> bool:
    if count == 1:
        return payload[:1] == b"\x00"  # an OK (an ERR ends everything anyway)
    if payload[:1] != b"\xfe" or len(payload) >= 0xFFFFFF:
        return False
    return last if deprecate_eof else len(payload) < 9  # the result's terminator / its EOFs


def _status_offset(payload: bytes, ok_form: bool) -> int:
    if payload[:1] == b"\x00" or ok_form:
        _, pos = wire.read_length_encoded_integer(payload, 1)
        _, pos = wire.read_length_encoded_integer(payload, pos)
        return pos
    return 3  # EOF: 0xFE, warnings(2), status(2)


def _status(payload: bytes, ok_form: bool) -> int:
    pos = _status_offset(payload, ok_form)
    return struct.unpack_from("<H", payload, pos)[0]


def _with_flag(payload: bytes, ok_form: bool) -> bytes:
    pos = _status_offset(payload, ok_form)
    flags = struct.unpack_from("<H", payload, pos)[0] | _MORE_RESULTS
    return payload[:pos] + struct.pack("<H", flags) + payload[pos + 2 :]
