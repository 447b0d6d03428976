// A ruvllm-edge client for Node 20: one ZeroMQ DEALER socket, one msgpack map per
// frame (docs/protocol.md). Requests are pipelined: each gets a fresh id, and one
// reader loop hands every reply to the request whose id it echoes.
//
//   import { Client } from "./client.js";
//   const c = new Client("ipc:///run/ruvllm-edge/ruvllm-edge.sock");
//   console.log((await c.query("What is Rust?")).text);
//   for await (const piece of c.stream("Tell me a story")) process.stdout.write(piece);
//   c.close();

import { setTimeout as sleep } from "node:timers/promises";
import { Dealer } from "zeromq";
import { decode, encode } from "@msgpack/msgpack";

/** An error reply from the daemon (or a client-side timeout, code "timeout"). */
export class RuvError extends Error {
  constructor({ code = "internal", message = "", details } = {}) {
    super(`${code}: ${message}`);
    this.name = "RuvError";
    this.code = code;            // one of the stable codes in docs/protocol.md
    this.details = details ?? {};
  }
}

// Worth retrying unchanged after a pause; every other error is final.
const RETRYABLE = new Set(["busy", "rate_limited"]);

/** The messages of one request, in order, with a per-message timeout. */
class Inbox {
  #queue = [];
  #waiter = null;

  push(item) {                   // a decoded message, or an Error to throw
    if (this.#waiter) this.#waiter(item);
    else this.#queue.push(item);
  }

  async next(timeoutMs, id) {
    const item = this.#queue.length ? this.#queue.shift() : await new Promise((resolve) => {
      const settle = (x) => { clearTimeout(timer); this.#waiter = null; resolve(x); };
      const timer = setTimeout(() => settle(new RuvError({
        code: "timeout", message: `no reply to request ${id} within ${timeoutMs} ms` })), timeoutMs);
      this.#waiter = settle;
    });
    if (item instanceof Error) throw item;
    return item;
  }
}

export class Client {
  #sock = new Dealer({ linger: 0 });
  #inboxes = new Map();          // request id -> Inbox
  #sending = Promise.resolve();  // a zeromq socket takes one send at a time
  #nextId = 0;
  #closed = false;

  /**
   * @param {string} endpoint  e.g. "ipc:///run/ruvllm-edge/ruvllm-edge.sock"
   * @param {{timeoutMs?: number, retries?: number, backoffMs?: number}} [options]
   *   timeoutMs: longest wait for the next message of a request (default 120 s);
   *   retries: how often a busy/rate_limited request is re-sent (default 5);
   *   backoffMs: first pause when the daemon gives no hint; doubles each time;
   *   maxMessageBytes: larger requests are refused here with too_large (default
   *     1 MiB, the daemon's server.max_message_bytes).
   */
  constructor(endpoint, { timeoutMs = 120_000, retries = 5, backoffMs = 100,
                          maxMessageBytes = 1_048_576 } = {}) {
    Object.assign(this, { endpoint, timeoutMs, retries, backoffMs, maxMessageBytes });
    this.retried = { busy: 0, rate_limited: 0 };   // how often each code was retried
    this.#sock.connect(endpoint);
    this.#readLoop();
  }

  async #readLoop() {
    let failure = new RuvError({ code: "closed", message: "the client was closed" });
    try {
      for await (const [frame] of this.#sock) {
        let msg;
        try {
          msg = decode(frame);
        } catch {
          continue;                // not msgpack: not from the daemon we speak to
        }
        // An unknown id is a late reply to a request we gave up on; a nil id is an
        // error about a message too broken to carry one (we never send those).
        this.#inboxes.get(msg?.id)?.push(msg);
      }
    } catch (err) {
      if (!this.#closed) failure = err;
    }
    for (const inbox of this.#inboxes.values()) inbox.push(failure);
  }

  #send(msg) {
    const frame = encode(msg, { ignoreUndefined: true });
    // Over server.max_message_bytes the daemon answers too_large; far over it
    // (server.drop_message_bytes) ZeroMQ drops the connection with no reply at all.
    if (frame.length > this.maxMessageBytes) {
      return Promise.reject(new RuvError({ code: "too_large", message:
        `message of ${frame.length} bytes exceeds ${this.maxMessageBytes}`,
        details: { limit_bytes: this.maxMessageBytes, size_bytes: frame.length } }));
    }
    const sent = this.#sending.then(() => this.#sock.send(frame));
    this.#sending = sent.catch(() => {});
    return sent;
  }

  #pause(error, attempt) {
    const hint = error.details?.retry_after_ms ?? error.retry_after_ms;
    if (typeof hint === "number" && hint >= 0) return hint;
    return Math.min(this.backoffMs * 2 ** attempt, 5_000) * (0.5 + Math.random() / 2);
  }

  /**
   * Every message of one request: token events, then the final reply (the one
   * with `ok`). A busy/rate_limited answer is retried under a new id before
   * anything else reaches the caller. A request abandoned early (timeout, or
   * the caller stopped iterating) is cancelled on the daemon.
   */
  async *#messages(op, args, { timeoutMs = this.timeoutMs, onSend } = {}) {
    for (let attempt = 0; ; attempt++) {
      if (this.#closed) throw new RuvError({ code: "closed", message: "the client was closed" });
      const id = String(++this.#nextId);
      const inbox = new Inbox();
      this.#inboxes.set(id, inbox);
      let finished = false;
      try {
        await this.#send({ v: 1, id, op, args });
        onSend?.(id);
        let msg = await inbox.next(timeoutMs, id);
        if (msg.ok === false && RETRYABLE.has(msg.error?.code) && attempt < this.retries) {
          finished = true;
          this.retried[msg.error.code] += 1;
          await sleep(this.#pause(msg.error, attempt));
          continue;
        }
        for (;;) {
          finished = "ok" in msg;
          yield msg;
          if (finished) return;
          msg = await inbox.next(timeoutMs, id);
        }
      } finally {
        this.#inboxes.delete(id);
        if (!finished && !this.#closed && op !== "cancel") {
          this.#send({ v: 1, id: String(++this.#nextId), op: "cancel", args: { request_id: id } })
            .catch(() => {});   // best effort; its reply has no inbox and is dropped
        }
      }
    }
  }

  /** Any op; resolves to its `result`, rejects with a RuvError. */
  async call(op, args = {}, options = {}) {
    for await (const msg of this.#messages(op, args, options)) {
      if (msg.ok) return msg.result;
      if (msg.ok === false) throw new RuvError(msg.error);
    }
    throw new RuvError({ message: `no final reply to ${op}` });
  }

  /** One answer. constraints: max_tokens, temperature, top_p, max_latency_ms. */
  query(text, { sessionId, useMemory, constraints, timeoutMs } = {}) {
    return this.call("query", queryArgs(text, sessionId, useMemory, constraints), { timeoutMs });
  }

  /** A streamed answer: `for await (const text of client.stream(q))`. See Stream. */
  stream(text, { sessionId, useMemory, constraints, timeoutMs } = {}) {
    const args = { ...queryArgs(text, sessionId, useMemory, constraints), stream: true };
    return new Stream(this, (onSend) => this.#messages("query", args, { timeoutMs, onSend }));
  }

  /** Cancel a request of this client by its envelope id or its server request_id. */
  cancel(requestId) {
    return this.call("cancel", { request_id: requestId });
  }

  health() {
    return this.call("health");
  }

  close() {
    this.#closed = true;
    this.#sock.close();
  }
}

/**
 * Async-iterable token texts of one streamed query. The request is sent when
 * iteration starts; iteration returns the done event's result (also kept in
 * `result`) or throws a RuvError (for example code "cancelled").
 */
export class Stream {
  #client;
  #open;

  constructor(client, open) {
    this.#client = client;
    this.#open = open;
    this.id = null;          // the envelope id, once sent (cancel() needs it)
    this.requestId = null;   // the server's request_id, once known
    this.result = null;
  }

  async *[Symbol.asyncIterator]() {
    for await (const msg of this.#open((id) => { this.id = id; })) {
      if (msg.event === "token") {
        this.requestId ??= msg.request_id ?? null;   // newer daemons put it on the first token
        yield msg.text;
      } else if (msg.ok) {
        this.result = msg.result;
        this.requestId = msg.result.request_id;
        return msg.result;
      } else {
        throw new RuvError(msg.error);
      }
    }
  }

  /** Stop generation; the iteration then throws a RuvError with code "cancelled". */
  cancel() {
    if (this.id === null) throw new Error("the stream has not started: iterate it first");
    return this.#client.cancel(this.id);
  }
}

function queryArgs(query, sessionId, useMemory, constraints) {
  return { query, session_id: sessionId, use_memory: useMemory, constraints };
}
