// The page of a meshd node: a full mesh peer in this browser (the wasm package in ./pkg),
// its identity sealed with a passphrase in IndexedDB, linked to the meshd that served the page.

const $ = (id) => document.getElementById(id);
const state = (text, error = false) => {
  $("state").textContent = text;
  $("state").classList.toggle("error", error);
};
const short = (peer) => `${peer.slice(0, 10)}…`;
const bytes = (n) =>
  n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;

let mesh = null; // the package
let node = null; // the running MeshNode
const digests = new Map(); // file id -> SHA-256 of the content last fetched or opened
const outgoing = new Map(); // message id -> its list item, for the receipt

async function main() {
  try {
    state("Loading the mesh node…");
    mesh = await import("./pkg/mesh_web.js");
    await mesh.default();
  } catch (e) {
    state(
      "This meshd was built without the browser node: build the package with `cargo xtask web`, " +
        "then meshd with MESH_WEB_PKG=$PWD/target/web/pkg.",
      true,
    );
    console.error(e);
    return;
  }
  // One node per browser profile: a second tab would be a second node with the same
  // identity on the same database.
  if (navigator.locks) {
    const held = await new Promise((resolve) => {
      navigator.locks.request("mesh-node", { ifAvailable: true }, (lock) => {
        resolve(lock !== null);
        return lock ? new Promise(() => {}) : undefined; // held until the page goes
      });
    });
    if (!held) {
      state("mesh is open in another tab of this browser: use that one.", true);
      return;
    }
  }
  state("Opening this browser's storage…");
  let known;
  try {
    known = await mesh.MeshNode.hasIdentity();
  } catch (e) {
    state(`This browser's storage (IndexedDB) cannot be used: ${e.message}`, true);
    return;
  }
  $("unlock-hint").textContent = known
    ? "This browser holds a mesh identity. Unlock it with its passphrase."
    : "No identity in this browser yet. Choose a passphrase (8 characters or more) to create one; it seals your key here.";
  $("unlock").textContent = known ? "Unlock" : "Create identity";
  $("confirm-row").hidden = known;
  $("passphrase2").required = !known;
  $("unlock-form").hidden = false;
  $("passphrase").focus();
  state(known ? "Locked" : "No identity yet");
  $("unlock-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const pass = $("passphrase").value;
    if (!known && pass !== $("passphrase2").value) {
      state("The passphrases differ.", true);
      return;
    }
    $("unlock").disabled = true;
    state(known ? "Unlocking…" : "Creating identity…");
    try {
      node = await mesh.MeshNode.open(pass, !known);
    } catch (e) {
      $("unlock").disabled = false;
      state(e.name === "WrongPassphrase" ? "Wrong passphrase." : `Could not open: ${e.message}`, true);
      return;
    }
    $("passphrase").value = "";
    $("passphrase2").value = "";
    await started();
  });
}

async function started() {
  $("unlock-form").hidden = true;
  $("me").hidden = false;
  $("forget").hidden = false;
  $("peer-id").textContent = node.peerId;
  $("fingerprint").textContent = node.fingerprint;
  for (const s of ["messaging", "files-section", "status-section"]) $(s).hidden = false;
  state("Connecting…");
  events();
  await renderFiles();
  try {
    const relay = await node.connect(location.origin);
    $("bootstrap").textContent = relay;
    state("Online");
    document.body.dataset.online = "true";
  } catch (e) {
    state(`Offline: ${e.message}`, true);
  }
  refreshStatus();
  setInterval(refreshStatus, 3000);
}

async function events() {
  for (;;) {
    try {
      const ev = await node.nextEvent();
      if (!ev) return;
      if (ev.type === "message") addMessage("in", ev.id, `${short(ev.from)}: ${ev.text}`, ev.from);
      else if (ev.type === "file") {
        addMessage("in", ev.id, `${short(ev.from)} offers the file ${ev.name} (${bytes(ev.size)})`, ev.from);
        await renderFiles();
      } else if (ev.type === "delivered") {
        const li = outgoing.get(ev.id);
        if (li) li.querySelector(".delivery").textContent = "delivered";
      } else if (ev.type === "recovery") {
        const note = ev.code ? ` (code ${ev.code})` : "";
        addMessage("in", "", `recovery: ${ev.event}${note}`, "");
      }
    } catch (e) {
      state(`Event error: ${e.message}`, true);
    }
  }
}

function addMessage(direction, id, text, from) {
  const li = document.createElement("li");
  li.className = direction;
  li.dataset.id = id;
  if (from) li.dataset.from = from;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  li.append(body);
  if (direction === "out") {
    outgoing.set(id, li);
    const d = document.createElement("span");
    d.className = "delivery muted";
    d.textContent = "sent";
    li.append(" ", d);
  }
  $("messages").append(li);
}

$("send-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const to = $("to").value.trim();
  const text = $("text").value;
  try {
    const id = await node.send(to, text);
    addMessage("out", id, `to ${short(to)}: ${text}`, "");
    $("text").value = "";
  } catch (e) {
    state(`Not sent: ${e.message}`, true);
  }
});

$("file-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("file").files[0];
  const to = $("file-to").value.trim();
  if (!file) return;
  if (file.size > node.maxFileSize) {
    state(`${file.name} is ${bytes(file.size)}; files of at most ${bytes(Number(node.maxFileSize))} can be sent.`, true);
    return;
  }
  state(`Encrypting and offering ${file.name}…`);
  try {
    const data = new Uint8Array(await file.arrayBuffer());
    await node.sendFile(to, file.name, data);
    state("Online");
    $("file").value = "";
    await renderFiles();
  } catch (e) {
    state(`File not sent: ${e.message}`, true);
  }
});

$("forget").addEventListener("click", async () => {
  if (!confirm("Delete this browser's identity, messages' state and files? This cannot be undone.")) return;
  try {
    await node.close();
    await mesh.MeshNode.forget();
    location.reload();
  } catch (e) {
    state(`Could not delete: ${e.message}`, true);
  }
});

function save(name, data) {
  const url = URL.createObjectURL(new Blob([data]));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function renderFiles() {
  const rows = [];
  for (const f of await node.files()) {
    const tr = document.createElement("tr");
    tr.dataset.id = f.id;
    tr.dataset.name = f.name;
    if (digests.has(f.id)) tr.dataset.sha256 = digests.get(f.id);
    const cells = [f.name, bytes(f.size), short(f.peer)];
    const stateText = f.direction === "sent" ? "sent" : f.stored ? "stored here" : "offered";
    cells.push(stateText);
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c;
      tr.append(td);
    }
    tr.children[3].className = "file-state";
    const td = document.createElement("td");
    if (f.direction === "received") {
      const b = document.createElement("button");
      b.type = "button";
      b.className = f.stored ? "open" : "fetch";
      b.textContent = f.stored ? "Save" : "Fetch";
      b.setAttribute("aria-label", `${b.textContent} ${f.name}`);
      b.addEventListener("click", async () => {
        b.disabled = true;
        try {
          const data = f.stored ? await node.openFile(f.id) : await node.fetchFile(f.id);
          if (f.stored) save(f.name, data);
          // Shown for checking (and by the end-to-end test); WebCrypto exists only in secure
          // contexts (https, localhost).
          if (crypto.subtle) digests.set(f.id, await sha256(data));
          await renderFiles();
        } catch (e) {
          state(`${f.name}: ${e.message}`, true);
          b.disabled = false;
        }
      });
      td.append(b);
    }
    tr.append(td);
    rows.push(tr);
  }
  $("files").replaceChildren(...rows);
}

async function sha256(data) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function refreshStatus() {
  if (!node) return;
  let s;
  try {
    s = await node.status();
  } catch (e) {
    return;
  }
  const rows = s.links.map((l) => {
    const tr = document.createElement("tr");
    for (const c of [
      short(l.peer),
      l.rttMs === undefined ? "–" : `${l.rttMs.toFixed(1)} ms`,
      `${Math.round(l.loss * 100)} %`,
      `${l.score}/100`,
    ]) {
      const td = document.createElement("td");
      td.textContent = c;
      tr.append(td);
    }
    return tr;
  });
  $("links").replaceChildren(...rows);
  let origin = "";
  try {
    const e = await mesh.MeshNode.storageEstimate();
    origin = `; this site uses ${bytes(e.usage)} of ${bytes(e.quota)} the browser allows`;
  } catch (_) {}
  $("storage").textContent =
    `Files: ${s.storage.blobs} blobs, ${bytes(s.storage.bytes)} of ${bytes(s.storage.quotaBytes)}${origin}.`;
  $("dht").textContent =
    `DHT: ${s.dht.contacts} contacts, ${s.dht.records} records. Messages: ${s.messaging.received} received, ` +
    `${s.messaging.sentDirect} sent directly, ${s.messaging.sentMesh} through the mesh.`;
}

main();
