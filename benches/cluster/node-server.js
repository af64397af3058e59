// A Node socket.io@4 node for the cluster benchmark: @socket.io/redis-streams-adapter on REDIS_URL,
// connection state recovery on, the test server's `join` and `to-room` events. Prints
// `listening on 127.0.0.1:<port>`.
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { createClient } from "redis";

const redis = createClient({ url: process.env.REDIS_URL });
redis.on("error", () => {});
await redis.connect();
const http = createServer();
const io = new Server(http, {
  adapter: createAdapter(redis),
  connectionStateRecovery: { maxDisconnectionDuration: 120_000 },
});
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    ack?.(true);
  });
  socket.on("to-room", ({ room, event, data }, ack) => {
    io.to(room).emit(event, data);
    ack?.(1);
  });
});
http.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${http.address().port}`);
});
