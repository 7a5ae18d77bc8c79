// The official OpenAI Node client (npm `openai`, major 4) against a running `tern serve`:
// models, completions, chat, streaming (for await; n=2 too), seeded sampling, logprobs, structured output
// (response_format json_schema), logit_bias / penalties, tool calls (plain, streamed, sent back), the Responses API
// (responses.create plain and streamed, responses.stream, function tools, json_schema) and errors as APIError.
// Driven by openai_client.sh: node openai_client.mjs NODE_DIR BASE_URL API_KEY EXPECT.json
// EXPECT holds the prompt, n and the `tern run` texts (greedy and seeded) to compare against.
// Prints one "ok - " / "FAIL - " line per check; exits 1 when any check failed.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const [nodeDir, baseURL, apiKey, expectPath] = process.argv.slice(2);
const require = createRequire(join(nodeDir, 'package.json'));
const OpenAI = require('openai');
const { APIError, AuthenticationError, BadRequestError, NotFoundError } = OpenAI;
const want = JSON.parse(readFileSync(expectPath, 'utf8'));

let pass = 0, fail = 0;
const ok = (what) => { pass++; console.log(`ok   - ${what}`); };
const bad = (what) => { fail++; console.log(`FAIL - ${what}`); };
const check = (cond, what, detail) => (cond ? ok(what) : bad(`${what}: ${detail ?? ''}`));
const show = (s) => JSON.stringify(s);

const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0, timeout: 60000 });

// run NAME FN: one group of checks; an exception is a failure of the group, never a crash
async function run(name, fn) {
  try { await fn(); } catch (e) { bad(`${name}: threw ${e?.constructor?.name}: ${e?.message}`); }
}

// expectErr NAME CLASS STATUS TYPE CODE FN: FN must reject with an APIError of that shape
async function expectErr(name, cls, status, type, code, fn) {
  try {
    await fn();
    bad(`${name}: no error`);
  } catch (e) {
    const good = e instanceof APIError && e instanceof cls && e.status === status && e.type === type &&
      (code === undefined || e.code === code) && typeof e.message === 'string' && e.message.length > 0;
    check(good, `${name}: ${cls.name} ${status} ${type}${code ? ` ${code}` : ''}`,
      `${e?.constructor?.name} status=${e?.status} type=${e?.type} code=${e?.code} message=${e?.message}`);
  }
}

await run('models', async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  check(ids.includes(want.model), `models.list() lists ${want.model}`, show(ids));
});

await run('completion', async () => {
  const r = await client.completions.create({ model: want.model, prompt: want.prompt, max_tokens: want.n,
    temperature: 0 });
  const c = r.choices[0];
  check(r.object === 'text_completion' && ['stop', 'length'].includes(c.finish_reason) &&
    r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens &&
    r.usage.completion_tokens <= want.n, 'completions.create: text_completion with usage', show(r));
  check(c.text === want.greedy, 'completion at temperature 0 == tern run --temp 0',
    `${show(c.text)} vs ${show(want.greedy)}`);
});

await run('streamed completion', async () => {
  const stream = await client.completions.create({ model: want.model, prompt: want.prompt, max_tokens: want.n,
    temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, chunks = 0;
  for await (const ch of stream) {
    chunks++;
    if (ch.usage) usage = ch.usage;
    if (ch.choices.length) {
      text += ch.choices[0].text;
      if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
    }
  }
  check(chunks > 1 && ['stop', 'length'].includes(finish) && usage && usage.completion_tokens >= 1,
    `streamed completion (for await): ${chunks} chunks, finish_reason ${finish}, usage chunk`, show(usage));
  check(text === want.greedy, 'streamed text == tern run --temp 0', `${show(text)} vs ${show(want.greedy)}`);
});

await run('seeded completion', async () => {
  const r = await client.completions.create({ model: want.model, prompt: want.prompt, max_tokens: want.n,
    temperature: want.seeded_temp, top_p: 0.95, seed: want.seed, top_k: 40, min_p: 0.05 });
  check(r.choices[0].text === want.seeded, `seed ${want.seed} at temperature ${want.seeded_temp} == tern run -s ${want.seed}`,
    `${show(r.choices[0].text)} vs ${show(want.seeded)}`);
});

await run('chat', async () => {
  const body = { model: want.model, max_tokens: 12, temperature: 0,
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hi' }] };
  const r = await client.chat.completions.create(body);
  const m = r.choices[0].message;
  check(r.object === 'chat.completion' && m.role === 'assistant' && typeof m.content === 'string' &&
    ['stop', 'length'].includes(r.choices[0].finish_reason) && r.usage.prompt_tokens > 0,
    'chat.completions.create: assistant message, finish_reason, usage', show(r));
  // the same request without the client (fetch): the client neither adds nor loses anything
  const raw = await (await fetch(`${baseURL}/v1/chat/completions`, { method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${apiKey}` },
    body: JSON.stringify(body) })).json();
  check(raw.choices?.[0]?.message?.content === m.content, 'chat content == the same request by fetch',
    `${show(m.content)} vs ${show(raw.choices?.[0]?.message?.content)}`);

  const stream = await client.chat.completions.create({ ...body, stream: true });
  let text = '', role = null, first = true, finish = null;
  for await (const ch of stream) {
    const d = ch.choices[0]?.delta ?? {};
    if (first) { role = d.role ?? null; first = false; }
    text += d.content ?? '';
    if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
  }
  check(role === 'assistant' && ['stop', 'length'].includes(finish),
    'streamed chat (for await): role in the first delta, finish_reason at the end', `role=${role} finish=${finish}`);
  check(text === m.content, 'streamed chat content == plain chat content', `${show(text)} vs ${show(m.content)}`);
});

await run('logprobs', async () => {
  const r = await client.completions.create({ model: want.model, prompt: want.prompt, max_tokens: want.n,
    temperature: 0, logprobs: 2 });
  const c = r.choices[0], lp = c.logprobs;
  const fine = (v) => typeof v === 'number' && Number.isFinite(v) && v <= 0;
  check(c.text === want.greedy && lp && lp.tokens.length === r.usage.completion_tokens &&
    lp.token_logprobs.length === lp.tokens.length && lp.text_offset.length === lp.tokens.length &&
    lp.token_logprobs.every(fine) && lp.text_offset[0] === 0,
    'completions.create({logprobs: 2}): tokens, token_logprobs <= 0, text_offset; same text', show(c));
  // top_logprobs: one {token: logprob} per position, 2 of them (JS orders integer-like keys first,
  // so compare values, not key order); greedy: the best is the sampled token
  check(Array.isArray(lp.top_logprobs) && lp.top_logprobs.length === lp.tokens.length &&
    lp.top_logprobs.every((d, i) => Object.keys(d).length === 2 && Object.values(d).every(fine) &&
      d[lp.tokens[i]] === lp.token_logprobs[i] && Math.max(...Object.values(d)) === lp.token_logprobs[i]),
    'completions.create({logprobs: 2}): top_logprobs, 2 per token, the greedy token the best', show(lp.top_logprobs));
  const body = { model: want.model, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 2,
    messages: [{ role: 'user', content: 'Say hi' }] };
  const ch = await client.chat.completions.create(body);
  const content = ch.choices[0].logprobs?.content ?? [];
  check(content.length === ch.usage.completion_tokens && content.every((t) => typeof t.token === 'string' &&
    fine(t.logprob) && Array.isArray(t.bytes) && Array.isArray(t.top_logprobs) && t.top_logprobs.length === 2 &&
    t.top_logprobs[0].token === t.token && t.top_logprobs[0].logprob === t.logprob &&
    t.top_logprobs[1].logprob <= t.top_logprobs[0].logprob && Array.isArray(t.top_logprobs[1].bytes)),
    'chat.completions.create({logprobs: true, top_logprobs: 2}): logprobs.content per token, 2 sorted alternatives',
    show(ch.choices[0].logprobs));
  const stream = await client.chat.completions.create({ ...body, stream: true });
  const streamed = [];
  for await (const k of stream) streamed.push(...(k.choices[0]?.logprobs?.content ?? []));
  check(JSON.stringify(streamed) === JSON.stringify(content), 'streamed chat logprobs == plain chat logprobs',
    `${show(streamed)} vs ${show(content)}`);
  const plain = await client.completions.create({ model: want.model, prompt: want.prompt, max_tokens: 2 });
  check(plain.choices[0].logprobs === null, 'no logprobs asked: logprobs null', show(plain.choices[0]));
  try {
    await client.completions.create({ model: want.model, prompt: 'a', logprobs: 6 });
    bad('logprobs 6: no error');
  } catch (e) {
    check(e instanceof BadRequestError && e.status === 400 && e.param === 'logprobs',
      'logprobs 6: BadRequestError 400 naming param logprobs', `${e?.constructor?.name} ${e?.status} ${e?.param}`);
  }
});

await run('several choices', async () => {
  const one = await client.completions.create({ model: want.model, prompt: want.prompt, max_tokens: want.n,
    temperature: 0 });
  const r = await client.completions.create({ model: want.model, prompt: [want.prompt, want.prompt], n: 2,
    max_tokens: want.n, temperature: 0 });
  check(r.choices.length === 4 && r.choices.every((c, i) => c.index === i && c.text === want.greedy) &&
    r.usage.completion_tokens === 4 * one.usage.completion_tokens,
    'completions.create({prompt: [p, p], n: 2}): 4 choices in order, each tern run --temp 0', show(r.choices));
  // streamed: chunks by choice index; choice 0 keeps the request's seed (== tern run -s), choice 1
  // == the plain reply's (a bad UTF-8 stretch cut by a chunk reads as 2 U+FFFD: compare runs as one)
  const seeded = { model: want.model, prompt: want.prompt, max_tokens: want.n, temperature: want.seeded_temp,
    top_p: 0.95, seed: want.seed, top_k: 40, min_p: 0.05, n: 2 };
  const plain = await client.completions.create(seeded);
  const text = ['', ''], finish = [null, null];
  for await (const ch of await client.completions.create({ ...seeded, stream: true })) {
    for (const c of ch.choices) { text[c.index] += c.text; finish[c.index] ??= c.finish_reason; }
  }
  const norm = (t) => t.replace(/\uFFFD+/g, '\uFFFD');
  check(norm(text[0]) === norm(want.seeded) && norm(text[1]) === norm(plain.choices[1].text) &&
    finish.every((f, i) => f === plain.choices[i].finish_reason),
    'streamed n=2 (for await, by choices[0].index): choice 0 == tern run -s, choice 1 == the plain reply\'s',
    `${show(text)} ${show(finish)} vs ${show(plain.choices.map((c) => c.text))}`);
});
await run('structured output', async () => {
  const schema = { type: 'object', properties: { ok: { type: 'boolean' }, color: { enum: ['red', 'green', 'blue'] } },
                   required: ['ok', 'color'] };
  const r = await client.chat.completions.create({ model: want.model, messages: [{ role: 'user', content: 'JSON' }],
    max_tokens: 64, temperature: 1, seed: 3,
    response_format: { type: 'json_schema', json_schema: { name: 'c', schema, strict: true } } });
  const c = r.choices[0];
  let o = null;
  try { o = JSON.parse(c.message.content); } catch (e) { /* checked below */ }
  check(c.finish_reason === 'stop' && o && typeof o.ok === 'boolean' && ['red', 'green', 'blue'].includes(o.color),
        'response_format json_schema: the content parses and matches', show(c));
  const b = await client.chat.completions.create({ model: want.model, messages: [{ role: 'user', content: 'x' }],
    max_tokens: 4, temperature: 0, logit_bias: { 5: -100 }, frequency_penalty: 0.5, presence_penalty: 0.5 });
  check(b.choices.length === 1, 'logit_bias, frequency_penalty and presence_penalty accepted', show(b.choices));
});

await run('tools', async () => {
  const tools = [
    { type: 'function', function: { name: 'get_weather', description: 'Weather of a city',
      parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['c', 'f'] } },
                    required: ['city', 'unit'] } } },
    { type: 'function', function: { name: 'add', parameters: { type: 'object',
      properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } } },
  ];
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const r = await client.chat.completions.create({ model: want.model, messages, tools, tool_choice: 'required',
    max_tokens: 200, temperature: 1, seed: 5 });
  const c = r.choices[0], call = c.message.tool_calls?.[0];
  let args = null;
  try { args = JSON.parse(call.function.arguments); } catch (e) { /* checked below */ }
  check(c.finish_reason === 'tool_calls' && call && call.type === 'function' &&
        ['get_weather', 'add'].includes(call.function.name) && args && typeof args === 'object',
        'tool_choice required: one call of a given tool with JSON arguments', show(c));
  // streamed: the deltas assemble into the same call
  const s = await client.chat.completions.create({ model: want.model, messages, tools, tool_choice: 'required',
    max_tokens: 200, temperature: 1, seed: 5, stream: true });
  let name = '', argText = '', fin = null;
  for await (const ch of s) {
    const d = ch.choices[0]?.delta;
    for (const t of d?.tool_calls ?? []) { name += t.function?.name ?? ''; argText += t.function?.arguments ?? ''; }
    fin = ch.choices[0]?.finish_reason ?? fin;
  }
  check(name === call?.function.name && argText === call?.function.arguments && fin === 'tool_calls',
        'streamed tool call == plain', show({ name, argText, fin }));
  // the call and its result go back in the conversation
  const r2 = await client.chat.completions.create({ model: want.model, max_tokens: 8, temperature: 0, tools,
    tool_choice: 'none', messages: [...messages, c.message, { role: 'tool', tool_call_id: call?.id ?? 'x', content: '21 C' }] });
  check(typeof r2.choices[0].message.content === 'string' && !r2.choices[0].message.tool_calls,
        'a tool result in the conversation; tool_choice none answers in text', show(r2.choices[0]));
});

await run('responses', async () => {
  // the Responses API: a plain reply, == chat for the same conversation; streamed (for await and
  // the SDK's own accumulating stream helper) == plain; a function tool round trip; json_schema
  const body = { model: want.model, instructions: 'Be brief.', input: 'Say hi', max_output_tokens: 12, temperature: 0 };
  const r = await client.responses.create(body);
  check(r.object === 'response' && r.id.startsWith('resp_') && r.output.length === 1 && r.output[0].type === 'message' &&
    r.output[0].role === 'assistant' && typeof r.output_text === 'string' && r.output_text.length > 0 &&
    ['completed', 'incomplete'].includes(r.status) && r.usage.input_tokens > 0 &&
    r.usage.total_tokens === r.usage.input_tokens + r.usage.output_tokens,
    'responses.create: a message item, output_text, status, usage', show(r));
  const c = await client.chat.completions.create({ model: want.model, max_tokens: 12, temperature: 0,
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hi' }] });
  check(r.output_text === c.choices[0].message.content && r.usage.input_tokens === c.usage.prompt_tokens,
    'responses output_text and input_tokens == chat content and prompt_tokens', `${show(r.output_text)} vs ${show(c.choices[0].message.content)}`);
  const stream = await client.responses.create({ ...body, stream: true });
  const types = [], seq = [];
  let text = '', last = null;
  for await (const ev of stream) {
    types.push(ev.type);
    seq.push(ev.sequence_number);
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed' || ev.type === 'response.incomplete') last = ev.response;
  }
  check(types[0] === 'response.created' && types[1] === 'response.in_progress' && types.at(-1) === `response.${r.status}` &&
    types.includes('response.output_item.added') && types.includes('response.content_part.added') &&
    types.includes('response.output_text.done') && seq.every((n, i) => n === i),
    'streamed responses (for await): created, in_progress, item events, then completed / incomplete; sequence numbers', show(types));
  check(text === r.output_text && last?.output?.[0]?.content?.[0]?.text === r.output_text && last.status === r.status,
    'streamed responses: deltas and the last response == the plain output_text', `${show(text)} vs ${show(r.output_text)}`);
  // the SDK accumulates the events itself (its snapshot: response.incomplete does not replace it; the
  // helper adds no output_text here, so read the item)
  const fin = await client.responses.stream(body).finalResponse();
  const ftext = fin.output?.[0]?.content?.[0]?.text;
  check(ftext === r.output_text && fin.output.length === 1, 'responses.stream().finalResponse(): the SDK-accumulated text == plain',
    `${show(ftext)} vs ${show(r.output_text)}`);

  const tools = [{ type: 'function', name: 'get_weather', description: 'Weather of a city', strict: true,
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['c', 'f'] } },
                  required: ['city', 'unit'] } }];
  const t = await client.responses.create({ model: want.model, input: 'Weather in Paris?', tools, tool_choice: 'required',
    max_output_tokens: 200, temperature: 1, seed: 5 });
  const call = t.output.find((o) => o.type === 'function_call');
  let args = null;
  try { args = JSON.parse(call.arguments); } catch (e) { /* checked below */ }
  check(call && call.name === 'get_weather' && call.call_id && args && ['c', 'f'].includes(args.unit),
    'responses tool_choice required: a function_call item with JSON arguments', show(t.output));
  const ts = client.responses.stream({ model: want.model, input: 'Weather in Paris?', tools, tool_choice: 'required',
    max_output_tokens: 200, temperature: 1, seed: 5 });
  let argDeltas = '';
  ts.on('response.function_call_arguments.delta', (ev) => { argDeltas += ev.delta; });
  const tf = await ts.finalResponse();
  const scall = tf.output.find((o) => o.type === 'function_call');
  check(argDeltas === call?.arguments && scall?.arguments === call?.arguments && scall?.name === call?.name,
    'streamed function call (SDK stream helper) == plain', show({ argDeltas, scall }));
  const t2 = await client.responses.create({ model: want.model, tools, tool_choice: 'none', max_output_tokens: 8,
    temperature: 0, input: [{ role: 'user', content: 'Weather in Paris?' }, call,
      { type: 'function_call_output', call_id: call?.call_id ?? 'x', output: '21 C' }] });
  check(t2.output[0]?.type === 'message' && typeof t2.output_text === 'string',
    'the function_call item and its function_call_output sent back: the next turn answers', show(t2.output));

  const schema = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false };
  const j = await client.responses.create({ model: want.model, input: 'JSON', max_output_tokens: 64, temperature: 1, seed: 3,
    text: { format: { type: 'json_schema', name: 'c', schema, strict: true } } });
  let o = null;
  try { o = JSON.parse(j.output_text); } catch (e) { /* checked below */ }
  check(j.status === 'completed' && o && typeof o.ok === 'boolean', 'responses text.format json_schema: output_text parses',
    show(j.output_text));
});
await expectErr('responses with previous_response_id', BadRequestError, 400, 'invalid_request_error', 'invalid_value',
  () => client.responses.create({ model: want.model, input: 'a', previous_response_id: 'resp_1' }));

await run('embeddings', async () => {
  // the client asks for base64 by default and decodes it; floats asked for must be the same values
  const r = await client.embeddings.create({ model: want.model, input: [want.prompt, 'Hello world'] });
  const f = await client.embeddings.create({ model: want.model, input: [want.prompt, 'Hello world'], encoding_format: 'float' });
  const norm = (v) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));
  check(r.object === 'list' && r.data.length === 2 && r.data.every((d, i) => d.index === i && d.object === 'embedding' &&
    d.embedding.length > 0 && Math.abs(norm(d.embedding) - 1) < 1e-4) && r.usage.prompt_tokens > 0 &&
    r.usage.total_tokens === r.usage.prompt_tokens, 'embeddings.create: 2 unit vectors with usage', show(r).slice(0, 300));
  check(r.data.every((d, i) => d.embedding.every((x, j) => Math.fround(f.data[i].embedding[j]) === x)),
    'embeddings: base64 (the default) == float, value for value');
});
await expectErr('embeddings with other dimensions', BadRequestError, 400, 'invalid_request_error', 'invalid_value',
  () => client.embeddings.create({ model: want.model, input: 'a', dimensions: 3 }));

await expectErr('n=17', BadRequestError, 400, 'invalid_request_error', 'invalid_value',
  () => client.completions.create({ model: want.model, prompt: 'a', n: 17 }));
await expectErr('streamed request with max_tokens 0', BadRequestError, 400, 'invalid_request_error', 'invalid_value',
  async () => { for await (const _ of await client.completions.create({ model: want.model, prompt: 'a', max_tokens: 0, stream: true })); });
await expectErr('empty messages', BadRequestError, 400, 'invalid_request_error', undefined,
  () => client.chat.completions.create({ model: want.model, messages: [] }));
await expectErr('prompt longer than the context', BadRequestError, 400, 'invalid_request_error',
  'context_length_exceeded', () => client.completions.create({ model: want.model, prompt: want.long_prompt, max_tokens: 4 }));
await expectErr('unknown route', NotFoundError, 404, 'invalid_request_error', 'not_found',
  () => client.get('/nope'));
await expectErr('wrong API key', AuthenticationError, 401, 'authentication_error', 'invalid_api_key',
  () => new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: 'wrong', maxRetries: 0 }).models.list());

await run('after the errors', async () => {
  const r = await client.completions.create({ model: want.model, prompt: want.prompt, max_tokens: want.n, temperature: 0 });
  check(r.choices[0].text === want.greedy, 'the server still answers the same after the errors', show(r.choices[0].text));
});

console.log(`${pass} passed, ${fail} failed`);
process.exit(fail === 0 ? 0 : 1);
