#!/usr/bin/env python3
"""Renders every chat template here (*.jinja) over every conversation of conversations.json with
Python's jinja2 set up as Hugging Face's apply_chat_template does (ImmutableSandboxedEnvironment,
trim_blocks and lstrip_blocks on, loopcontrols, raise_exception, strftime_now, HF's tojson:
json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)),
and the language-feature cases of features.json ({"t": template, "v": variables}), and writes
one JSON object: "TEMPLATE|CONVERSATION", "features|NN" or "features-raw|NN" (the same case
with Jinja's own defaults, trim_blocks and lstrip_blocks off) -> {"out": text} or {"raise": message} (the
template called raise_exception) or {"error": message} (any other failure).
tests/unit/test_jinja.c compares tern's renderer with it byte for byte: with expected.json (kept
here, made by `python3 render.py > expected.json`) or, live, with this script's output
(tests/integration/jinja_py.sh). strftime_now is fixed at 2024-07-26 12:00:00 UTC."""
import datetime, json, os, sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

NOW = datetime.datetime(2024, 7, 26, 12, 0, 0)
BOS, EOS = "<s>", "</s>"


class Raised(Exception):
    pass


def raise_exception(message):
    raise Raised(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return NOW.strftime(fmt)


def env(hf=True):
    e = ImmutableSandboxedEnvironment(trim_blocks=hf, lstrip_blocks=hf, extensions=[loopcontrols])
    e.filters["tojson"] = tojson
    e.globals["raise_exception"] = raise_exception
    e.globals["strftime_now"] = strftime_now
    return e


def variables(conv, tools):
    """the variables tern passes (coordinator/chat.c): messages, add_generation_prompt,
    bos_token, eos_token, and tools when the conversation has some (else none, as HF)"""
    return {
        "messages": conv["messages"],
        "add_generation_prompt": conv.get("add_generation_prompt", True),
        "bos_token": BOS,
        "eos_token": EOS,
        "tools": tools if conv.get("tools") else None,
    }


# the templates with a native tool-call format (coordinator/toolfmt.c) rendered as `tern serve
# --jinja` renders a chat request with tools: "server|TEMPLATE|CONVERSATION" keys, compared by
# tests/unit/test_toolfmt.c with what server_req_parse_fmt + server_gen_chat_text make of the
# same request on a generated vocabulary (BOS <|begin_of_text|>, which its tokenizer adds itself)
SERVER_TEMPLATES = ("qwen2.5-instruct", "llama3.1", "llama3.2", "mistral-small-3.1-24b-instruct-2503")
SERVER_BOS, SERVER_EOS = "<|begin_of_text|>", "<|end_of_text|>"


def server_variables(conv, tools):
    """llama.cpp's (and tern's) template inputs for a request with tools: each tool call's
    "arguments" JSON text parsed back into its object (a text that is no object or array stays
    a string), the request's tools, add_generation_prompt true"""
    msgs = json.loads(json.dumps(conv["messages"]))
    for m in msgs:
        for c in m.get("tool_calls") or []:
            a = c["function"].get("arguments")
            if isinstance(a, str):
                try:
                    v = json.loads(a)
                except ValueError:
                    v = a
                c["function"]["arguments"] = v if isinstance(v, (dict, list)) else a
    return {"messages": msgs, "add_generation_prompt": True, "bos_token": SERVER_BOS, "eos_token": SERVER_EOS,
            "tools": tools}


def render_server(e, here, data, result):
    for name in SERVER_TEMPLATES:
        with open(os.path.join(here, name + ".jinja"), encoding="utf-8", newline="") as f:
            tmpl = e.from_string(f.read())
        for cname in sorted(data["conversations"]):
            conv = data["conversations"][cname]
            if not conv.get("tools"):
                continue
            key = "server|%s|%s" % (name, cname)
            try:
                out = tmpl.render(**server_variables(conv, data["tools"]))
                result[key] = {"out": out[len(SERVER_BOS):] if out.startswith(SERVER_BOS) else out}
            except Raised as x:
                result[key] = {"raise": str(x)}
            except Exception as x:
                result[key] = {"error": "%s: %s" % (type(x).__name__, x)}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "conversations.json"), encoding="utf-8") as f:
        data = json.load(f)
    e = env()
    result = {}
    for name in sorted(os.listdir(here)):
        if not name.endswith(".jinja"):
            continue
        with open(os.path.join(here, name), encoding="utf-8", newline="") as f:
            tmpl = e.from_string(f.read())
        for cname in sorted(data["conversations"]):
            key = name[:-6] + "|" + cname
            try:
                result[key] = {"out": tmpl.render(**variables(data["conversations"][cname], data["tools"]))}
            except Raised as x:
                result[key] = {"raise": str(x)}
            except Exception as x:  # a template that cannot render this conversation
                result[key] = {"error": "%s: %s" % (type(x).__name__, x)}
    with open(os.path.join(here, "features.json"), encoding="utf-8") as f:
        features = json.load(f)
    raw = env(hf=False)   # Jinja's own defaults: trim_blocks and lstrip_blocks off
    for i, feat in enumerate(features):
        for prefix, en in (("features", e), ("features-raw", raw)):
            key = "%s|%02d" % (prefix, i)
            try:
                result[key] = {"out": en.from_string(feat["t"]).render(**feat["v"])}
            except Raised as x:
                result[key] = {"raise": str(x)}
            except Exception as x:
                result[key] = {"error": "%s: %s" % (type(x).__name__, x)}
    render_server(e, here, data, result)
    json.dump(result, sys.stdout, ensure_ascii=False, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
