# httpcheck: what the Python checkers of tests/integration/*.sh share (lib.bash puts this folder
# on PYTHONPATH): a JSON POST that gives (status, text) whatever the status, the "ok   " / "FAIL "
# lines that lib.bash's count_checks counts, a check that turns an exception into a failure, and
# an SSE reader. Standard library only; no test's own logic lives here.
import json, urllib.request, urllib.error


def post(url, path, body, headers=None, raw=False, timeout=120):
    """(HTTP status, reply text) of POST url+path: body as JSON (raw: body is the bytes to send),
    Content-Type application/json plus headers; an HTTP error status is returned, not raised"""
    req = urllib.request.Request(url + path, body if raw else json.dumps(body).encode(),
                                 dict({"Content-Type": "application/json"}, **(headers or {})))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def say(good, what):
    """prints "ok   WHAT" or "FAIL WHAT", flushed (the shell counts them as they come)"""
    print(("ok   " if good else "FAIL ") + what, flush=True)


def check(what, fn):
    """says whether fn() -> (good, info) is good; info is shown only on failure, and an exception
    from fn fails the check with its repr"""
    try:
        good, info = fn()
        say(good, what + ("" if good else f": {info}"))
    except Exception as e:
        say(False, f"{what}: {e!r}")


def events(txt):
    """an SSE stream's text -> [(event name or None, data parsed as JSON or None)]"""
    out = []
    for ev in txt.split("\n\n"):
        if not ev.strip():
            continue
        lines = ev.split("\n")
        name = [l[7:] for l in lines if l.startswith("event: ")]
        data = [l[6:] for l in lines if l.startswith("data: ")]
        out.append((name[0] if name else None, json.loads(data[0]) if data else None))
    return out
