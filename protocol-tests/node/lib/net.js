// Loopback networking for tests.
//
//   import { freePort } from "../lib/net.js";
//   const port = await freePort();   // a port nothing listens on now, on 127.0.0.1

import { createServer } from "node:net";

/** A free TCP port on 127.0.0.1 (the OS picks it; it is released before this resolves). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}
