"""Messages an editor reads, in plain words.

Errors are recorded as the service and the libraries said them (History keeps that text,
for whoever debugs); what the review page shows goes through plain_message(), which
replaces Python's exception text with what happened in a few words.
"""

import re

# Text no editor should have to read: exception reprs, urllib3's pool wording, errno.
TECHNICAL = re.compile(
    r"HTTPS?ConnectionPool|Max retries exceeded|\[Errno|Errno \d+|Traceback|"
    r"\b\w+(?:Error|Exception|Timeout|Disconnected)\(|object at 0x|urllib3|requests\.\w+|"
    r"Caused by|<\w+[ .]"
)

# What happened, in words: the first that matches names the cause.
CAUSES = [
    (re.compile(r"Errno 111|Connection refused|ECONNREFUSED", re.I), "connection refused"),
    (
        re.compile(
            r"Name or service not known|getaddrinfo|NameResolution|nodename nor servname"
            r"|Temporary failure in name resolution",
            re.I,
        ),
        "its address was not found",
    ),
    (re.compile(r"timed? ?out|Timeout", re.I), "no answer in time"),
    (
        re.compile(
            r"Connection reset|Errno 104|RemoteDisconnected|Connection aborted|BrokenPipe"
            r"|IncompleteRead|ChunkedEncodingError|ProtocolError",
            re.I,
        ),
        "the connection broke off",
    ),
    (re.compile(r"SSL|certificate", re.I), "no secure connection could be made"),
    (
        re.compile(r"No route to host|Network is unreachable|Errno 113|Errno 101", re.I),
        "the network is unreachable",
    ),
]

UNEXPECTED = re.compile(r"unexpected error: .*", re.I | re.S)


def plain_message(text: str | None) -> str:
    """Return the message with every piece of technical text replaced by its cause in plain
    words: "Could not reach the image service (HTTPConnectionPool(host=…) … Errno 111 …)"
    becomes "Could not reach the image service (connection refused)". Plain text is
    returned as it is."""
    text = (text or "").strip()
    if not text:
        return ""
    text = UNEXPECTED.sub(_unexpected, text)
    text = text[:1].upper() + text[1:]
    if not TECHNICAL.search(text):
        return text
    pieces = []
    for outer, inner in _groups(text):
        if inner is None:
            pieces.append(outer)
        elif TECHNICAL.search(inner):
            cause = _cause(inner)
            pieces.append(f"({cause})" if cause else "")
        else:
            pieces.append(outer)
    plain = re.sub(r" +([.,;:])", r"\1", re.sub(r"  +", " ", "".join(pieces))).strip()
    if TECHNICAL.search(plain):  # technical text outside parentheses: keep the cause only
        cause = _cause(plain)
        head = "The image service could not be used"
        return f"{head} ({cause})" if cause else f"{head}; History has the details."
    return plain


def _unexpected(match: re.Match) -> str:
    cause = _cause(match.group(0))
    if cause:
        return f"an unexpected error ({cause})"
    return "an unexpected error (History has the details)"


def _cause(text: str) -> str:
    return next((words for pattern, words in CAUSES if pattern.search(text)), "")


def _groups(text: str):
    """Yield (piece, inside) over the text: top-level parenthesised groups with what is
    inside them, and the text between them with None."""
    depth, start, last = 0, 0, 0
    for index, char in enumerate(text):
        if char == "(":
            if depth == 0:
                if index > last:
                    yield text[last:index], None
                start = index
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            if depth == 0:
                yield text[start : index + 1], text[start + 1 : index]
                last = index + 1
    if depth:  # unbalanced: the rest is one group
        yield text[start:], text[start + 1 :]
    elif last < len(text):
        yield text[last:], None


# What a service says can echo the prompt that failed: a halt's message carries it after
# these words, and only the project whose call it was is shown them.
SERVICE_SAID = " The service said: "


def without_service_text(message: str) -> str:
    """Return a halt's message without the service's own words: what every project on the
    account may read (the account's state and reason), not one editor's echoed prompt."""
    return message.split(SERVICE_SAID, 1)[0]
