// Starts a server binary that prints `listening on <host>:<port>` and resolves with the child and
// its URL; rejects if that line does not come within 10 s. Shared by the Node benchmark scripts.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

export function startServer(bin, env) {
  const child = spawn(bin, [], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start")), 10_000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /listening on (\S+):(\d+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: `http://127.0.0.1:${m[2]}` });
      }
    });
  });
}
