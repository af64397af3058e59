// Dashboard tokens for the analytics service's tests: HS256 JWTs as an operator's tooling makes them.
//
//   import { dashboardToken } from "../lib/token.js";
//   dashboardToken(SECRET, ["acme"]);                   // valid for an hour
//   dashboardToken(SECRET, ["acme"], { ttl: -60 });      // expired a minute ago
//   dashboardToken(SECRET, ["acme"], { nbf: 30 });       // not valid for another 30 s

import { createHmac } from "node:crypto";

const b64url = (data) => Buffer.from(data).toString("base64url");

/** A token granting `orgs`, valid for `ttl` seconds, not before `nbf` seconds from now when given. */
export function dashboardToken(secret, orgs, { ttl = 3600, nbf } = {}) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const now = Math.floor(Date.now() / 1000);
  const claims = { orgs, exp: now + ttl };
  if (nbf !== undefined) claims.nbf = now + nbf;
  const payload = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${sig}`;
}
