// The generated-client test, TypeScript side (tests/e2e/test_generated_clients.py runs it).
// Types come from docs/api/openapi.json (openapi-typescript → schema.d.ts); `tsc` must accept this
// file against them, then node runs it against two real gateways:
//   node out/check.js US_URL US_TOKEN CN_URL CN_TOKEN BODY_JSON
// It submits a seizure share, follows it to `delivered`, reads it from the peer's inbox, and prints
// one JSON line with what it saw. Any mismatch between the document and the API fails it.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type SeizureShare = components["schemas"]["SeizureShare"];
type Problem = components["schemas"]["Problem"];

const [usUrl, usToken, cnUrl, cnToken, bodyJson] = process.argv.slice(2);
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

let status = "";
for (let i = 0; i < 200 && status !== "delivered"; i++) {
  const m = await us.GET("/v1/messages/{id}", { params: { path: { id } } });
  if (!m.data) fail("get message", m.error as Problem);
  status = m.data.status;
  if (status !== "delivered") await new Promise((r) => setTimeout(r, 50));
}

const page = await cn.GET("/v1/inbox", { params: { query: { limit: 100 } } });
if (!page.data) fail("inbox", page.error as Problem);
const item = page.data.messages.find((x) => x.id === id);
if (!item) fail("inbox item");
const got = item.body as SeizureShare;

const missing = await us.GET("/v1/messages/{id}", {
  params: { path: { id: "01a00000-0000-7000-8000-000000000000" } },
});
const problem = missing.error as Problem | undefined;

console.log(
  JSON.stringify({ ok: true, id, status, from: item.from, case_reference: got.case_reference, missing: problem?.code }),
);
