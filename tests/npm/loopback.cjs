// Preloaded into npm-packaged servers under test (`node -r loopback.cjs ...`): every TCP listen
// goes to 127.0.0.1, so nothing a test starts is reachable from beyond this machine.
"use strict";
const net = require("net");

const listen = net.Server.prototype.listen;

net.Server.prototype.listen = function (...args) {
  const callback = args.find((arg) => typeof arg === "function");
  const first = args[0];
  if (first !== null && typeof first === "object" && !Array.isArray(first)) {
    if (first.path !== undefined || first.fd !== undefined || first.handle !== undefined) {
      return listen.apply(this, args); // a socket path or a handle, not a TCP port
    }
    return listen.call(this, { ...first, host: "127.0.0.1" }, callback);
  }
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    return listen.call(this, { port: Number(first), host: "127.0.0.1" }, callback);
  }
  if (first === undefined || typeof first === "function") {
    return listen.call(this, { port: 0, host: "127.0.0.1" }, callback);
  }
  return listen.apply(this, args); // a pipe name
};
