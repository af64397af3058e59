// The Node socket.io@4 peer of the Tidings benchmark harness (benches/run.sh).
//
// Listens on 127.0.0.1 at PORT (default 3000; 0 = a free port) with a listen backlog of 1024, and
// prints `listening on 127.0.0.1:<port>`. The harness contract, on namespace `/` at `/socket.io/`:
// - `join` (room name) -> join that room and ack `true`;
// - `echo` (any data) -> emit `echo` back to the sender with the same arguments;
// - `broadcast` `{room, data}` -> emit `bcast` with `data` to every socket in `room`.
// Everything else is socket.io's defaults (the `ws` engine, pingInterval 25 s, pingTimeout 20 s).
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT ?? 3000);
const httpServer = http.createServer();
const io = new Server(httpServer);

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(String(room));
    if (typeof ack === "function") ack(true);
  });
  socket.on("echo", (...args) => {
    socket.emit("echo", ...args);
  });
  socket.on("broadcast", (msg) => {
    if (msg && typeof msg.room === "string") io.to(msg.room).emit("bcast", msg.data);
  });
});

httpServer.listen({ port, host: "127.0.0.1", backlog: 1024 }, () => {
  console.log(`listening on 127.0.0.1:${httpServer.address().port}`);
});

const stop = () => {
  io.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
