// The API's OpenAPI document against the `tidings` binary: it is valid OpenAPI 3.1 (checked by a
// validator from npm), every example request is answered as its examples say (accepted, or the
// 400 example of the same name, word for word), and every other documented error is what the
// server answers in that situation.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { Validator } from "@seriousme/openapi-schema-validator";
import { startServer } from "../lib/server.js";

const BIN = process.env.TIDINGS_ANALYTICS_BIN;
const skip = BIN ? false : "TIDINGS_ANALYTICS_BIN is not set";
const API_KEY = "openapi-key";

let server;
let doc;

before(async () => {
  if (skip) return;
  server = await startServer({
    bin: BIN,
    env: {
      TIDINGS_PORT: "0",
      TIDINGS_AUTH_SECRET: "openapi-secret",
      TIDINGS_API_KEY: API_KEY,
      TIDINGS_DEMO: "false",
      TIDINGS_API_BODY_TIMEOUT_MS: "300",
      RUST_LOG: "warn",
    },
  });
  const res = await fetch(`${server.url}/api/v1/openapi.json`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /application\/json/);
  doc = await res.json();
});

after(async () => {
  if (server) await server.stop();
});

const post = (body, { key = API_KEY, org = "acme" } = {}) =>
  fetch(`${server.url}/api/v1/orgs/${org}/events`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });

const events = () => doc.paths["/api/v1/orgs/{org}/events"].post;

test("the served document is valid OpenAPI 3.1", { skip }, async () => {
  assert.equal(doc.openapi, "3.1.0");
  const result = await new Validator().validate(doc);
  assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
});

test("every request example is answered as documented", { skip }, async () => {
  const requests = events().requestBody.content["application/json"].examples;
  const refusals = events().responses["400"].content["application/json"].examples;
  const accepted = events().responses["200"].content["application/json"].examples;
  let ok = 0;
  let refused = 0;
  for (const [name, { value }] of Object.entries(requests)) {
    const res = await post(value);
    const body = await res.json();
    if (refusals[name]) {
      assert.equal(res.status, 400, `${name}: ${JSON.stringify(body)}`);
      assert.deepEqual(body, refusals[name].value, name);
      refused++;
    } else {
      assert.equal(res.status, 200, `${name}: ${JSON.stringify(body)}`);
      const want = Array.isArray(value) ? accepted.batch.value : accepted.one.value;
      assert.deepEqual(body, want, name);
      ok++;
    }
  }
  // Each kind of event and the seed's shape are documented, and so is every 400 example.
  for (const name of ["message", "message-seed-shape", "sentiment", "metrics", "batch"]) assert.ok(requests[name], name);
  assert.equal(refused, Object.keys(refusals).length - 1, "every 400 example but invalid-json has its request");
  assert.ok(ok >= 5);
});

test("the other documented errors are the server's answers", { skip }, async () => {
  const responses = events().responses;
  const example = (status, name) => {
    const content = responses[status].content["application/json"];
    return name ? content.examples[name].value : content.example;
  };
  // A body that is not JSON.
  let res = await post("x");
  assert.equal(res.status, 400);
  assert.deepEqual(await res.json(), example("400", "invalid-json"));
  // No key, or a wrong one.
  for (const key of [null, "wrong"]) {
    res = await post({ type: "metrics", data: { totalMessages: 1 } }, { key });
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), example("401"));
  }
  // Over 1 MB (declared).
  res = await post(JSON.stringify({ type: "metrics", data: { totalMessages: 1 }, pad: "x".repeat(1_000_001) }));
  assert.equal(res.status, 413);
  assert.deepEqual(await res.json(), example("413"));
  // A body that never arrives (the server's body timeout is 300 ms here).
  const raw = await new Promise((resolve, reject) => {
    const socket = connect(server.port, "127.0.0.1");
    let data = "";
    socket.on("data", (d) => (data += d));
    socket.on("end", () => resolve(data));
    socket.on("error", reject);
    socket.write(
      `POST /api/v1/orgs/acme/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${API_KEY}\r\n` +
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    );
  });
  assert.match(raw, /^HTTP\/1\.1 408/);
  assert.deepEqual(JSON.parse(raw.slice(raw.indexOf("\r\n\r\n") + 4)), example("408"));
});

test("a production server without an API key answers the documented 503", { skip }, async () => {
  const closed = await startServer({
    bin: BIN,
    env: { TIDINGS_PORT: "0", TIDINGS_AUTH_SECRET: "s", TIDINGS_DEMO: "false", RUST_LOG: "warn" },
  });
  try {
    const res = await fetch(`${closed.url}/api/v1/orgs/acme/events`, { method: "POST", body: "{}" });
    assert.equal(res.status, 503);
    assert.deepEqual(await res.json(), events().responses["503"].content["application/json"].example);
  } finally {
    await closed.stop();
  }
});
