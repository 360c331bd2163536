// The generated-client test, TypeScript side (tests/e2e/test_generated_clients.py runs it).
// Types come from docs/api/openapi.json (openapi-typescript → schema.d.ts); `tsc` must accept this
// file against them, then node runs it against two real gateways:
//   node out/check.js US_URL US_TOKEN CN_URL CN_TOKEN BODY_JSON EVERY_TYPE_JSON
// It submits a seizure share, follows it to `delivered`, reads it from the peer's inbox; then it
// submits one message of every business type (EVERY_TYPE_JSON: type -> body), reads each from the
// peer's inbox and acknowledges one; it prints one JSON line with what it saw. Any mismatch between
// the document and the API fails it.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type SeizureShare = components["schemas"]["SeizureShare"];
type Problem = components["schemas"]["Problem"];
type SubmitRequest = components["schemas"]["SubmitRequest"];

const [usUrl, usToken, cnUrl, cnToken, bodyJson, everyJson] = process.argv.slice(2);
const us = createClient<paths>({ baseUrl: usUrl, headers: { Authorization: `Bearer ${usToken}` } });
const cn = createClient<paths>({ baseUrl: cnUrl, headers: { Authorization: `Bearer ${cnToken}` } });

function fail(what: string, problem?: Problem): never {
  console.log(JSON.stringify({ ok: false, what, problem }));
  process.exit(1);
}

const body: SeizureShare = JSON.parse(bodyJson);
const submitted = await us.POST("/v1/messages", {
  body: { type: "seizure-share", to: "CN-GACC", body },
  params: { header: { "Idempotency-Key": "ts-client-1" } },
});
if (!submitted.data) fail("submit", submitted.error as Problem);
const id: string = submitted.data.id;

async function delivered(id: string): Promise<string> {
  let status = "";
  for (let i = 0; i < 200 && status !== "delivered"; i++) {
    const m = await us.GET("/v1/messages/{id}", { params: { path: { id } } });
    if (!m.data) fail("get message", m.error as Problem);
    status = m.data.status;
    if (status !== "delivered") await new Promise((r) => setTimeout(r, 50));
  }
  return status;
}
const status = await delivered(id);

const page = await cn.GET("/v1/inbox", { params: { query: { limit: 100 } } });
if (!page.data) fail("inbox", page.error as Problem);
const item = page.data.messages.find((x) => x.id === id);
if (!item) fail("inbox item");
const got = item.body as SeizureShare;

const missing = await us.GET("/v1/messages/{id}", {
  params: { path: { id: "01a00000-0000-7000-8000-000000000000" } },
});
const problem = missing.error as Problem | undefined;

// Every business type, each checked against the document's request union.
const every: Record<string, unknown> = JSON.parse(everyJson);
const sent: Record<string, string> = {};
for (const [type, typeBody] of Object.entries(every)) {
  const request = { type, to: "CN-GACC", body: typeBody } as SubmitRequest;
  const res = await us.POST("/v1/messages", { body: request });
  if (!res.data) fail(`submit ${type}`, res.error as Problem);
  sent[type] = res.data.id;
}
for (const mid of Object.values(sent)) await delivered(mid);
const all = await cn.GET("/v1/inbox", { params: { query: { limit: 500 } } });
if (!all.data) fail("inbox", all.error as Problem);
const types: string[] = [];
for (const [type, mid] of Object.entries(sent)) {
  const found = all.data.messages.find((x) => x.id === mid);
  if (!found || found.type !== type) fail(`inbox item of ${type}`);
  types.push(found.type);
}
const acked = await cn.POST("/v1/inbox/{id}/ack", {
  params: { path: { id: sent["joint-operation"] } },
  body: { status: "processed", reason: null },
});
if (!acked.data) fail("ack", acked.error as Problem);

console.log(
  JSON.stringify({
    ok: true,
    id,
    status,
    from: item.from,
    case_reference: got.case_reference,
    missing: problem?.code,
    types,
    acked: acked.data.status === "queued" ? "processed" : acked.data.status,
  }),
);
