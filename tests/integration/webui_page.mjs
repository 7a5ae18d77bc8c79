// The web UI page's script (coordinator/webui/index.html) run in node, without a browser: its
// DOM-free helpers (globalThis.ternWebui) are loaded in a vm context and fed — the SSE parser
// with streams cut at every place (inside lines, between \r and \n, byte by byte), streamChat
// with a fake fetch whose body splits UTF-8 characters and with error replies, and, given a
// server, streamChat and modelName against it (text == the plain reply at temperature 0) and
// the page itself over a stub DOM (send, stop, new chat, the key, localStorage; innerHTML is a
// trap: model text must go in as text).
// Driven by webui.sh: node webui_page.mjs PAGE.html [BASE_URL KEY|- PLAIN_TEXT_FILE MODEL]
// Prints one "ok   - " / "FAIL - " line per check; exits 1 when any check failed.
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const [pagePath, base, keyArg, plainPath, modelWant] = process.argv.slice(2);
const html = readFileSync(pagePath, 'utf8');
const script = html.slice(html.indexOf('<script>') + 8, html.indexOf('</script>'));
let pass = 0, fail = 0;
const check = (cond, what, detail) => {
  if (cond) { pass++; console.log(`ok   - ${what}`); } else { fail++; console.log(`FAIL - ${what}: ${detail ?? ''}`); }
};
const show = (x) => JSON.stringify(x);
process.on('unhandledRejection', (e) => {   // e.g. an event handler of the page threw
  check(false, 'no error escapes the page', e && e.message);
  console.log(`${pass} passed, ${fail} failed`);
  process.exit(1);
});

const ctx = { fetch, TextDecoder, TextEncoder, AbortController, ReadableStream, Response, console };
vm.createContext(ctx);
vm.runInContext(script, ctx, { filename: 'index.html <script>' });
const W = ctx.ternWebui;
check(W && typeof W.sseParser === 'function' && typeof W.streamChat === 'function',
  'the script defines ternWebui without a DOM (the page wiring does not run)', show(Object.keys(W || {})));

// ---- SSE parser ------------------------------------------------------------------------------
const stream = 'data: {"a":1}\n\n: a comment\n\nevent: x\ndata: two\ndata: lines\n\n' +
  'data:no-space\r\n\r\nid: 7\r\ndata: crlf\r\ndata: 2\r\n\r\ndata: cr only\r\rdata: [DONE]\n\ndata: tail';
const want = ['{"a":1}', 'two\nlines', 'no-space', 'crlf\n2', 'cr only', '[DONE]', 'tail'];
function parseIn(pieces) {
  const got = [];
  const p = W.sseParser((d) => got.push(d));
  for (const s of pieces) p.push(s);
  p.end();
  return got;
}
check(show(parseIn([stream])) === show(want), 'SSE: one piece gives every event (comments, CRLF, CR, multi-line data, no blank line at the end)',
  show(parseIn([stream])));
let badCut = null;
for (let i = 0; i <= stream.length && !badCut; i++)
  for (let j = i; j <= stream.length && !badCut; j += 3)
    if (show(parseIn([stream.slice(0, i), stream.slice(i, j), stream.slice(j)])) !== show(want)) badCut = [i, j];
check(!badCut, 'SSE: the stream cut in three anywhere gives the same events', show(badCut));
check(show(parseIn([...stream])) === show(want), 'SSE: character by character, the same events');
{
  const got = [];
  const p = W.sseParser((d) => got.push(d));
  p.push('data: a\n');
  const early = got.length;
  p.push('\ndata: b\r');
  const beforeLf = got.length;
  p.push('\n\r\n');
  check(early === 0 && beforeLf === 1 && show(got) === show(['a', 'b']),
    'SSE: an event is delivered when its blank line comes, not before; \\r then \\n in the next piece is one line end',
    show([early, beforeLf, got]));
}

// ---- request body ----------------------------------------------------------------------------
{
  const b = W.chatBody({ system: 'Be brief.', temperature: '0.3', top_p: '', max_tokens: '12.4' },
    [{ role: 'user', content: 'hi', tps: 3 }]);
  check(show(b) === show({ messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }],
    stream: true, stream_options: { include_usage: true }, temperature: 0.3, max_tokens: 12 }),
  'chatBody: system prompt first, numbers parsed, empty settings left out, stream with usage', show(b));
  const n = W.chatBody({ system: '  ', temperature: 'x' }, []);
  check(n.messages.length === 0 && !('temperature' in n), 'chatBody: a blank system prompt and a non-number are left out', show(n));
  check(W.authHeaders('k').Authorization === 'Bearer k' && !('Authorization' in W.authHeaders('')),
    'authHeaders: Bearer KEY only when there is a key');
}

// ---- streamChat over a fake fetch: UTF-8 cut inside characters, errors --------------------------
const enc = new TextEncoder();
function fakeFetch(status, text, cut, log) {
  return async (url, init) => {
    if (log) log.push({ url, init });
    const bytes = enc.encode(text);
    const body = new ReadableStream({
      start(c) {
        for (let i = 0; i < bytes.length; i += cut) c.enqueue(bytes.slice(i, i + cut));
        c.close();
      },
    });
    return new Response(body, { status });
  };
}
const chunk = (content, finish = null) => 'data: ' + JSON.stringify({ object: 'chat.completion.chunk',
  choices: [{ index: 0, delta: content === null ? {} : { content }, finish_reason: finish }] }) + '\n\n';
const text = 'héllo ✓ 世界 🙂';
const sse = 'data: ' + JSON.stringify({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] }) + '\n\n' +
  [...text].map((ch) => chunk(ch)).join('') + chunk(null, 'length') +
  'data: ' + JSON.stringify({ choices: [], usage: { completion_tokens: 9 }, timings: { predicted_per_second: 42.5 } }) + '\n\ndata: [DONE]\n\n';
for (const cut of [1, 2, 3, 7, 1000]) {
  const log = [], pieces = [];
  try {
    const r = await W.streamChat('http://x', 'k3y', { messages: [] }, (t) => pieces.push(t), undefined, fakeFetch(200, sse, cut, log));
    check(r.text === text && pieces.join('') === text && r.finish === 'length' && r.tps === 42.5 && r.usage.completion_tokens === 9,
      `streamChat, body in pieces of ${cut} byte(s): the text (UTF-8 cut inside characters), finish_reason, usage, tokens/s from timings`,
      show([r.text, r.finish, r.tps, r.usage]));
    if (cut === 1) check(log[0].url === 'http://x/v1/chat/completions' && log[0].init.headers.Authorization === 'Bearer k3y' &&
      log[0].init.method === 'POST', 'streamChat: POST /v1/chat/completions with Authorization: Bearer KEY', show(log[0]));
  } catch (e) { check(false, `streamChat in pieces of ${cut}`, e.message); }
}
{
  const noTimings = sse.replace(/"timings":\{[^}]*\}/, '"timings":{}');
  const r = await W.streamChat('', '', {}, () => {}, undefined, fakeFetch(200, noTimings, 5));
  check(r.tps >= 0 && Number.isFinite(r.tps), 'tokens/s counted when the server sends no timings', show(r.tps));
  check(W.tokensPerSecond({ timings: null, usage: { completion_tokens: 11 }, chunks: 3, tFirst: 1000 }, 3000) === 5,
    'tokensPerSecond: (completion_tokens - 1) / seconds from the first text');
}
async function rejects(what, p, re) {
  try { await p; check(false, what, 'resolved'); } catch (e) { check(re.test(e.message) || re.test(e.name), what, e.name + ' ' + e.message); }
}
await rejects('streamChat: an HTTP error rejects with its status and OpenAI message',
  W.streamChat('', '', {}, () => {}, undefined, fakeFetch(401, '{"error":{"message":"invalid or missing API key"}}', 9)),
  /^401: invalid or missing API key$/);
await rejects('streamChat: an error event in the stream rejects with its message',
  W.streamChat('', '', {}, () => {}, undefined, fakeFetch(200, chunk('a') + 'data: {"error":{"message":"the request timed out"}}\n\ndata: [DONE]\n\n', 4)),
  /the request timed out/);
await rejects('streamChat: a stream cut before [DONE] rejects',
  W.streamChat('', '', {}, () => {}, undefined, fakeFetch(200, chunk('a'), 4)), /ended early/);

// ---- against the server ------------------------------------------------------------------------
if (base) {
  const key = keyArg && keyArg !== '-' ? keyArg : '';
  const body = { messages: [{ role: 'user', content: 'Say hi' }], max_tokens: 24, temperature: 0, ignore_eos: true,
    stream: true, stream_options: { include_usage: true } };
  try {
    let n = 0;
    const r = await W.streamChat(base, key, body, () => n++);
    const plain = readFileSync(plainPath, 'utf8');
    check(r.text === plain && n > 0, 'streamChat against the server: the streamed text == the plain reply at temperature 0',
      show([r.text, plain]));
    check(r.tps > 0 && r.usage && r.usage.completion_tokens > 0, 'streamChat against the server: tokens/s and usage', show([r.tps, r.usage]));
  } catch (e) { check(false, 'streamChat against the server', e.message); }
  try {
    check(await W.modelName(base, key) === modelWant, 'modelName: the id /v1/models gives', modelWant);
  } catch (e) { check(false, 'modelName', e.message); }
  if (key) {
    try { await W.modelName(base, ''); check(false, 'modelName without the key', 'resolved'); } catch (e) {
      check(e.status === 401, 'modelName without the key: rejects with status 401 (the page then asks for it)', e.message);
    }
    const ac = new AbortController();
    const p = W.streamChat(base, key, { ...body, max_tokens: 400 }, () => ac.abort(), ac.signal);
    await rejects('streamChat: the stop button (AbortController) ends the stream', p, /AbortError|abort/i);
  }
}
// ---- the page over a stub DOM -------------------------------------------------------------------
class El {
  constructor(tag, id) {
    Object.assign(this, { tag, id, children: [], listeners: {}, value: '', text: '', className: '', disabled: false,
      open: false, scrollTop: 0, scrollHeight: 0 });
  }
  get textContent() { return this.children.length ? this.children.map((c) => c.textContent).join('') : this.text; }
  set textContent(t) { this.children = []; this.text = String(t); }
  get innerHTML() { throw new Error('the page read innerHTML'); }
  set innerHTML(_) { throw new Error('the page set innerHTML'); }
  insertAdjacentHTML() { throw new Error('the page inserted HTML'); }
  append(...cs) { this.children.push(...cs); }
  replaceChildren(...cs) { this.children = cs; }
  addEventListener(ev, fn) { (this.listeners[ev] ||= []).push(fn); }
  fire(ev, e = {}) { for (const f of this.listeners[ev] || []) f({ preventDefault() {}, key: '', ...e }); }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, ms = 30000) { for (let t = 0; t < ms && !cond(); t += 20) await sleep(20); return cond(); }

// every element the script looks up is in the page
{
  const ids = new Set([...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]));
  const fields = (script.match(/const FIELDS = \[([^\]]*)\]/) || ['', ''])[1].match(/[a-z_]+/g) || [];
  const used = [...new Set([...[...script.matchAll(/\$\("([^"]+)"\)/g)].map((m) => m[1]), ...fields])];
  const missing = used.filter((i) => !ids.has(i));
  check(used.length > 5 && missing.length === 0, `the page has every element its script looks up (${used.length})`, show(missing));
}

async function pageTest(base, key, plainText) {
  const ids = [...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]);
  const els = Object.fromEntries(ids.map((i) => [i, new El('x', i)]));
  const store = {};
  let endless = false;   // the stop test's request gets ignore_eos (a random model ends anywhere)
  const patch = (init) => (endless && init && init.body ? { ...init, body: JSON.stringify({ ...JSON.parse(init.body), ignore_eos: true }) } : init);
  const page = { console, TextDecoder, AbortController, setTimeout, JSON,
    document: { getElementById: (i) => els[i] || null, createElement: (t) => new El(t) },
    localStorage: { getItem: (k) => (k in store ? store[k] : null), setItem: (k, v) => { store[k] = String(v); } },
    fetch: (u, init) => fetch(base + u, patch(init)) };   // the page's URLs are relative to its server
  store['tern.webui.v1'] = JSON.stringify({ settings: { key: '', system: '', temperature: '0', top_p: '', max_tokens: '24' },
    messages: [] });
  vm.createContext(page);
  try {
    vm.runInContext(script, page, { filename: 'index.html <script> (page)' });
  } catch (e) { check(false, 'the page starts', e.message); return; }
  const tag = key ? ' (--api-key)' : '';
  if (key) {
    await until(() => /API key/.test(els.status.textContent), 5000);
    check(/API key/.test(els.status.textContent) && els.settings.open, 'page: without the key it says so and opens Settings',
      els.status.textContent);
    els.key.value = key;
    els.key.fire('change');
  }
  await until(() => els.model.textContent === modelWant, 5000);
  check(els.model.textContent === modelWant, 'page: the model name from /v1/models' + tag, els.model.textContent);
  const evil = '<img src=x onerror=alert(1)> hi';
  els.input.value = evil;
  els.input.fire('keydown', { key: 'Enter' });
  await until(() => !els.send.disabled && els.log.children.length === 2 && !/generating/.test(els.status.textContent));
  const msgs = els.log.children;
  const saved = JSON.parse(store['tern.webui.v1'] || '{}').messages || [];
  const reply = msgs[1] ? msgs[1].children[1].textContent : null, info = msgs[1] ? msgs[1].children[0].textContent : '';
  check(msgs.length === 2 && msgs[0].children[1].textContent === evil && msgs[0].className === 'msg user',
    'page: Enter sends; the user text shown as text' + tag, show(msgs.map((m) => m.textContent)));
  check(reply === plainText && /tokens\/s$/.test(info), 'page: the streamed reply == the plain reply, with its tokens/s' + tag,
    show([reply, plainText, info]));
  check(saved.length === 2 && saved[1].content === plainText && saved[1].tps > 0,
    'page: the conversation is kept in localStorage' + tag, show(saved));
  // stop: a long reply, stopped after its first text; the part kept
  els.max_tokens.value = '10000';
  els.max_tokens.fire('change');
  endless = true;
  els.input.value = 'Count';
  els.send.fire('click');
  await until(() => els.log.children.length === 4 && els.log.children[3].children[1].textContent.length > 0, 10000);
  const stopWasOn = !els.stop.disabled;
  els.stop.fire('click');
  await until(() => !els.send.disabled);
  const after = JSON.parse(store['tern.webui.v1']).messages;
  check(stopWasOn && els.status.textContent === 'stopped' && els.stop.disabled && after.length === 4 && after[3].content.length > 0
    && !after[3].error, 'page: Stop ends the reply (AbortController), the part so far kept' + tag,
  show([stopWasOn, els.status.textContent, after.length]));
  els.new.fire('click');
  check(els.log.children.length === 0 && JSON.parse(store['tern.webui.v1']).messages.length === 0,
    'page: New chat forgets the conversation' + tag);
}
if (base) {
  // the page sends no ignore_eos: its reference is the same request, not streamed
  const key = keyArg && keyArg !== '-' ? keyArg : '';
  const r = await fetch(base + '/v1/chat/completions', { method: 'POST', headers: ctx.ternWebui.authHeaders(key),
    body: JSON.stringify({ messages: [{ role: 'user', content: '<img src=x onerror=alert(1)> hi' }], temperature: 0, max_tokens: 24 }) });
  const plain = (await r.json()).choices[0].message.content;
  try { await pageTest(base, key, plain); } catch (e) { check(false, 'page test', e.stack); }
}
console.log(`${pass} passed, ${fail} failed`);
process.exit(fail ? 1 : 0);
