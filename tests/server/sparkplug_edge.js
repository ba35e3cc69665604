// A Sparkplug B edge node built on Eclipse Tahu's JavaScript client (npm sparkplug-client),
// driven by the tests through stdin: one JSON object per line, answered with events on
// stdout, one JSON object per line. It behaves as an edge node should: on NCMD
// "Node Control/Rebirth" it publishes its NBIRTH and every DBIRTH again (current values),
// and on a DCMD it applies the written metrics and reports them in a DDATA.
//
//   node sparkplug_edge.js '{"serverUrl": "tcp://127.0.0.1:1883", "groupId": "g", "edgeNode": "e"}'
//
// stdin ops: {"op": "birth", "node": [metrics], "devices": {"d1": [metrics]}}
//            {"op": "ndata"|"ddata", "device": "d1", "metrics": [...]}   (alias-only is fine)
//            {"op": "gap", "skip": 3}      the next message's seq jumps (lost messages)
//            {"op": "ddeath", "device": "d1"}
//            {"op": "stop"}                NDEATH (bdSeq of this session), then exit
//            {"op": "crash"}               exit without a word: the broker sends the will
// stdout events: connected, ncmd, dcmd, rebirth, published, error

const sparkplug = require("sparkplug-client");
const readline = require("readline");

const opts = JSON.parse(process.argv[2]);
const client = sparkplug.newClient({
  serverUrl: opts.serverUrl,
  username: opts.username || "",
  password: opts.password || "",
  groupId: opts.groupId,
  edgeNode: opts.edgeNode,
  clientId: opts.clientId || `tahu-${opts.edgeNode}-${process.pid}`,
  version: "spBv1.0",
  publishDeath: true,
});
if (opts.bdSeq !== undefined) client.bdSeq = opts.bdSeq;

const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
let node = [];
let devices = {};
// Each message a later millisecond than the last: readings are stored once per (device,
// metric, timestamp), and two ops read from one stdin chunk can share a millisecond.
let last = 0;
const now = () => (last = Math.max(Date.now(), last + 1));
const copy = (metrics) => metrics.map((m) => ({ ...m }));

function publishBirths() {
  client.publishNodeBirth({ timestamp: now(), metrics: copy(node) });
  for (const [id, metrics] of Object.entries(devices)) {
    client.publishDeviceBirth(id, { timestamp: now(), metrics: copy(metrics) });
  }
}

function remember(metrics, into) {
  // Keep the birth's current values so a rebirth reports what the device holds now.
  for (const m of metrics) {
    const known = into.find((b) => (m.name !== undefined ? b.name === m.name : b.alias === m.alias));
    if (known) known.value = m.value;
  }
}

client.on("birth", () => say({ event: "connected" }));
client.on("error", (err) => say({ event: "error", message: String(err) }));
client.on("ncmd", (payload) => {
  say({ event: "ncmd", payload });
  const rebirth = (payload.metrics || []).find((m) => m.name === "Node Control/Rebirth" && m.value);
  if (rebirth) {
    publishBirths();
    say({ event: "rebirth" });
  }
});
client.on("dcmd", (device, payload) => {
  say({ event: "dcmd", device, payload });
  const birth = devices[device] || [];
  const report = [];
  for (const m of payload.metrics || []) {
    const known = birth.find((b) => b.name === m.name || (m.alias !== undefined && b.alias === m.alias));
    if (!known) continue;
    known.value = m.value;
    report.push({ alias: known.alias, type: known.type, value: m.value });
  }
  if (report.length) client.publishDeviceData(device, { timestamp: now(), metrics: report });
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  switch (cmd.op) {
    case "birth":
      node = cmd.node || [];
      devices = cmd.devices || {};
      publishBirths();
      break;
    case "ndata":
      remember(cmd.metrics, node);
      client.publishNodeData({ timestamp: now(), metrics: cmd.metrics });
      break;
    case "ddata":
      remember(cmd.metrics, devices[cmd.device] || []);
      client.publishDeviceData(cmd.device, { timestamp: now(), metrics: cmd.metrics });
      break;
    case "gap":
      client.seq = (client.seq + cmd.skip) % 256; // as if `skip` messages were lost
      break;
    case "ddeath":
      client.publishDeviceDeath(cmd.device, { timestamp: now(), metrics: [] });
      break;
    case "stop":
      client.stop();
      setTimeout(() => process.exit(0), 200);
      return;
    case "crash":
      process.exit(3);
  }
  say({ event: "published", op: cmd.op });
});
