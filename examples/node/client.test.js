// Runs client.js against a REAL daemon: RUVLLM_EDGE_ENDPOINT=ipc://... node --test
// (tests/integration/test_examples.py starts one and sets the variable).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, RuvError } from "./client.js";

const endpoint = process.env.RUVLLM_EDGE_ENDPOINT;
const SHORT = { max_tokens: 12, temperature: 0 };   // the model is slow on a busy CPU

describe("ruvllm-edge client", { skip: !endpoint && "set RUVLLM_EDGE_ENDPOINT" }, () => {
  let c;
  before(() => { c = new Client(endpoint, { timeoutMs: 120_000 }); });
  after(() => c.close());

  test("health answers", async () => {
    const h = await c.health();
    assert.ok(["healthy", "degraded"].includes(h.status), h.status);
    assert.equal(typeof h.version, "string");
    assert.equal(h.components.inference.state === "unavailable", false);
  });

  test("query returns a non-empty answer and a server request_id", async () => {
    const r = await c.query("What is the capital of France?", { constraints: SHORT });
    assert.ok(r.text.trim().length > 0, JSON.stringify(r));
    assert.match(r.request_id, /^\S+$/);
    assert.ok(["stop", "length", "deadline", "memory"].includes(r.finish_reason), r.finish_reason);
    assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 12, JSON.stringify(r.usage));
  });

  test("stream yields token texts, then returns the done result", async () => {
    const s = c.stream("Name three colours.", { constraints: SHORT });
    const pieces = [];
    const it = s[Symbol.asyncIterator]();
    let step;
    while (!(step = await it.next()).done) pieces.push(step.value);
    assert.ok(pieces.length >= 1);
    assert.ok(pieces.every((p) => typeof p === "string"));
    assert.equal(step.value, s.result);                  // the iterator's return value
    assert.equal(pieces.join(""), s.result.text);
    assert.equal(s.result.usage.completion_tokens, pieces.length);
    assert.equal(s.requestId, s.result.request_id);
  });

  test("replies are matched by id: health answers while a stream runs", async () => {
    const s = c.stream("Describe the sea.", { constraints: SHORT });
    const it = s[Symbol.asyncIterator]();
    await it.next();                                     // the first token is here
    const h = await c.health();                          // answered on the socket thread
    assert.ok(h.components.queue.active >= 1, JSON.stringify(h.components.queue));
    let step;
    while (!(step = await it.next()).done);
    assert.equal(step.value.request_id, s.requestId);
  });

  test("a bad request is refused with bad_request, an unknown op with unknown_op", async () => {
    await assert.rejects(c.query(""), (e) =>
      e instanceof RuvError && e.code === "bad_request" && /(^|\.)query$/.test(e.details.field));
    await assert.rejects(c.query("hi", { constraints: { max_tokens: 0 } }), (e) =>
      e.code === "bad_request" && /max_tokens/.test(e.message));
    await assert.rejects(c.call("no.such.op"), (e) =>
      e.code === "unknown_op" && e.details.known.includes("query"));
    await assert.rejects(c.call("memory.get", { id: 987654321 }), { code: "not_found" });
  });

  test("cancel stops a running stream", async () => {
    const s = c.stream("Count from 1 to 500, separated by commas.",
      { constraints: { max_tokens: 400, temperature: 0 } });
    const it = s[Symbol.asyncIterator]();
    await it.next();
    const res = await s.cancel();
    assert.deepEqual([res.cancelled, res.state], [true, "running"]);
    let tokens = 1;
    await assert.rejects(async () => { while (!(await it.next()).done) tokens++; },
      (e) => e instanceof RuvError && e.code === "cancelled");
    assert.ok(tokens < 400, `${tokens} tokens after cancel`);
  });

  test("cancel of a queued request, by envelope id, ends it with cancelled", async () => {
    // Long enough to still hold the one generation slot while the second is queued
    // and cancelled (12 tokens can finish in ~0.1 s on an idle CPU).
    const running = c.stream("Tell me about trees.", { constraints: { max_tokens: 200, temperature: 0 } });
    const it = running[Symbol.asyncIterator]();
    await it.next();                                     // the one generation slot is taken
    const queued = c.stream("Tell me about rivers.", { constraints: SHORT });
    const qit = queued[Symbol.asyncIterator]();
    const first = qit.next();                            // sends it; it waits in the queue
    while (queued.id === null) await new Promise((r) => setImmediate(r));
    const res = await queued.cancel();
    assert.deepEqual([res.cancelled, res.state], [true, "queued"]);
    await assert.rejects(first, { code: "cancelled" });
    while (!(await it.next()).done);                     // the running one is unaffected
    assert.ok(running.result.text.length > 0);
    await assert.rejects(c.cancel(running.id), { code: "not_found" });   // finished
  });

  test("a client-side timeout rejects, and the late reply is not mistaken for the next", async () => {
    await assert.rejects(c.query("Say hello.", { constraints: SHORT, timeoutMs: 5 }),
      { code: "timeout" });
    const r = await c.call("memory.stats");
    assert.equal(typeof r, "object");
    assert.equal("text" in r, false);                    // not the abandoned query's answer
  });

  test("rate_limited replies are retried after a pause until all succeed", async () => {
    const burst = new Client(endpoint, { timeoutMs: 30_000, retries: 8 });
    try {
      const replies = await Promise.all(Array.from({ length: 160 }, () => burst.health()));
      assert.equal(replies.length, 160);
      assert.ok(replies.every((h) => typeof h.status === "string"));
      assert.ok(burst.retried.rate_limited > 0, "the burst should have hit the rate limit");
    } finally {
      burst.close();
    }
  });
});
