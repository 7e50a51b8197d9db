"""What a search result shows of a function: its ``def`` line and its docstring's first line.

Why: the index stores the first lines of each function as written (``snippet``); a client
that shows "the line after ``def``" starts mid-signature when the signature spans several
lines.  The header is rebuilt here — every line up to the ``:`` that closes it, joined and
with its whitespace collapsed — together with the first line of the docstring, from the
stored snippet alone (no file read per result, no re-index).
"""

from __future__ import annotations

import re

HEADER_LINES = 8
_DEF_RE = re.compile(r"^\s*(async\s+)?def\s")
_DOC_RE = re.compile(r"^\s*[rRuUbBfF]{0,2}(\"\"\"|'''|\"|')")
_OPEN, _CLOSE = "([{", ")]}"


def _scan(line: str) -> tuple[str, int]:
    """The line without its comment, and its bracket depth change (strings skipped)."""
    depth, quote, i = 0, "", 0
    while i < len(line):
        char = line[i]
        if quote:
            if char == "\\":
                i += 1
            elif line.startswith(quote, i):
                i += len(quote) - 1
                quote = ""
        elif char == "#":
            return line[:i].rstrip(), depth
        elif char in "\"'":
            quote = line[i:i + 3] if line[i:i + 3] in ('"""', "'''") else char
            i += len(quote) - 1
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        i += 1
    return line, depth


def _tidy(header: str) -> str:
    text = re.sub(r"\s+", " ", header).strip()
    text = re.sub(r"([(\[{]) ", r"\1", text)
    text = re.sub(r",? ([)\]}])", r"\1", text)
    return text[:-1].rstrip() if text.endswith(":") else text


def snippet_parts(snippet: str) -> tuple[str, str]:
    """``(signature, summary)`` of a stored snippet: ``def name(args) -> type`` on one line,
    and the first line of the docstring ('' when there is none in the snippet)."""
    lines = snippet.splitlines()
    start = next((i for i, line in enumerate(lines) if _DEF_RE.match(line)), None)
    if start is None:
        return (lines[0].strip() if lines else ""), ""
    depth, end, header = 0, start, []
    for end in range(start, min(len(lines), start + HEADER_LINES)):
        code, change = _scan(lines[end])
        header.append(code)
        depth += change
        if depth <= 0 and code.rstrip().endswith(":"):
            break
    signature = _tidy(" ".join(header))
    rest = [line for line in lines[end + 1:] if line.strip()]
    summary = ""
    if rest and (match := _DOC_RE.match(rest[0])):
        quote = match.group(1)
        first = rest[0][match.end():]
        if not first.strip() and len(rest) > 1:
            first = rest[1]
        summary = first.split(quote, 1)[0].strip()
    return signature, summary
