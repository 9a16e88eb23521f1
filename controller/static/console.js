// The console's behaviour: live updates over Server-Sent Events, and the buttons and forms,
// which call the JSON API (/api/v1) with this session's CSRF token. No framework, no build.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const body = document.body;
const page = body.dataset.page;
const threadId = Number(body.dataset.threadId || 0);
const taskId = Number(body.dataset.taskId || 0);

function signedOut() {
  location.assign("/pair#signed-out");
}

async function api(method, url, payload) {
  const headers = { "X-CSRF-Token": csrf };
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method, headers, credentials: "same-origin",
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  if (response.status === 401) { signedOut(); throw new Error("signed out"); }
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  const text = await response.text();  // a 204 has no body, whatever its type says
  if (text && type.startsWith("application/json")) data = JSON.parse(text);
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

function showError(near, message) {
  const box = near && near.querySelector(".error");
  if (box) { box.textContent = message; box.hidden = false; } else { alert(message); }
}

// --- swapping in server-rendered fragments ----------------------------------------------

async function fragment(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (response.status === 401) { signedOut(); return null; }
  if (!response.ok) return null;
  const holder = document.createElement("div");
  holder.innerHTML = (await response.text()).trim();
  return holder.firstElementChild;
}

// What a person was doing in a card survives its refresh: typed text, open sections.
function carryOver(from, to) {
  for (const field of from.querySelectorAll("textarea[id], input[id]")) {
    const twin = to.querySelector(`#${CSS.escape(field.id)}`);
    if (twin && field.value) twin.value = field.value;
  }
  const opened = [...from.querySelectorAll("details")].map((d) => d.open);
  to.querySelectorAll("details").forEach((d, i) => { if (opened[i]) d.open = true; });
  const output = from.querySelector("pre.output");
  const stuck = output && output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
  const fresh = to.querySelector("pre.output");
  if (fresh && (stuck || !output)) requestAnimationFrame(() => { fresh.scrollTop = fresh.scrollHeight; });
}

const refreshing = new Map();

// Refresh `key` from `url`: at once (a person may be waiting for this card), and events that
// arrive meanwhile make one more request a little later, so a burst costs two requests.
function refresh(key, url, place, waitMs = 0) {
  let state = refreshing.get(key);
  if (!state) { state = { busy: false, again: false }; refreshing.set(key, state); }
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  setTimeout(async () => {
    try {
      const fresh = await fragment(url);
      if (fresh) place(fresh);
    } finally {
      state.busy = false;
      if (state.again) { state.again = false; refresh(key, url, place, 60); }
    }
  }, waitMs);
}

function replaceOrAdd(id, container, position) {
  return (fresh) => {
    const old = document.getElementById(id);
    if (old) { carryOver(old, fresh); old.replaceWith(fresh); countdown(); markSeen(); return; }
    if (!container) return;
    const empty = document.getElementById("no-tasks");
    if (empty) empty.hidden = true;
    if (container.tagName === "OL") {
      const item = document.createElement("li");
      item.className = "item";
      item.append(fresh);
      container.append(item);
    } else if (position === "start") {
      container.prepend(fresh);
    } else {
      container.append(fresh);
    }
    countdown();
    markSeen();
  };
}

function refreshTask(taskId) {
  refresh(`task-${taskId}`, `/fragments/tasks/${taskId}`,
    replaceOrAdd(`task-${taskId}`, document.getElementById("history")));
}

function refreshApproval(approvalId, addTo) {
  refresh(`approval-${approvalId}`, `/fragments/approvals/${approvalId}`,
    (fresh) => {
      replaceOrAdd(`approval-${approvalId}`, addTo, "start")(fresh);
      const inbox = document.getElementById("inbox");
      const empty = document.getElementById("inbox-empty");
      if (inbox && empty) empty.hidden = inbox.querySelector(".approval") !== null;
    });
}

function refreshPending() {
  fetch("/fragments/pending", { credentials: "same-origin" }).then(async (r) => {
    if (!r.ok) return;
    const count = Number(await r.text());
    const badge = document.getElementById("pending-count");
    badge.textContent = String(count);
    badge.classList.toggle("zero", count === 0);
  });
}

// --- the event stream ---------------------------------------------------------------------

let lastEventId = Number(body.dataset.after || 0);
let stream = null;

function onEvent(message) {
  const event = JSON.parse(message.data);
  lastEventId = Math.max(lastEventId, event.id);
  const kind = event.kind;
  const head = event.data && event.data.audit_head;
  if (head) seenAuditHead(`${head.seq}:${head.hash}`);
  // Output is not in the audit log; steps, approvals and state changes are.
  if (page === "audit" && event.task_id === taskId && kind !== "task.output") {
    refresh("audit", `/fragments/tasks/${taskId}/audit`, (fresh) => {
      document.getElementById("audit").replaceWith(fresh);
      auditPageHead();
    });
  }
  if (kind.startsWith("approval.")) refreshPending();
  if (page === "threads" && (kind === "thread.created" || kind === "task.state")) {
    refresh("threads", "/fragments/threads", (fresh) => {
      document.getElementById("threads").replaceChildren(...fresh.parentNode.childNodes);
      markUnread();
    });
  }
  if (page === "thread" && event.thread_id === threadId && event.task_id) {
    refreshTask(event.task_id);
  }
  if (page === "approvals" && kind.startsWith("approval.")) {
    const id = event.data.approval_id;
    refreshApproval(id, kind === "approval.requested" ? document.getElementById("inbox") : null);
  }
}

const KINDS = ["task.state", "task.output", "task.step", "thread.created", "thread.message",
  "approval.requested", "approval.decided"];

function connect() {
  if (stream) stream.close();
  stream = new EventSource(`/api/v1/events?after=${lastEventId}`);
  const live = document.getElementById("live");
  stream.onopen = () => live.classList.add("on");
  for (const kind of KINDS) stream.addEventListener(kind, onEvent);
  stream.onerror = async () => {
    live.classList.remove("on");
    // The stream also ends when this device is revoked: then there is no session to resume.
    const check = await fetch("/fragments/pending", { credentials: "same-origin" }).catch(() => null);
    if (check && check.status === 401) { stream.close(); signedOut(); return; }
    if (stream.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
}

// A phone that slept, or lost its network, comes back with a stream that may have died
// meanwhile: open it again at once, from the last event this page saw.
function wake() {
  if (document.visibilityState !== "visible") return;
  if (!stream || stream.readyState !== EventSource.OPEN) connect();
}

// --- the audit chain's head ------------------------------------------------------------
// The console keeps the last head it saw. A later log that does not extend it was cut or
// rewritten (or an entry was edited): every page then says so, loudly, until it is accepted.

const HEAD_KEY = "dispatch.audit.head";
// A check reads the whole log on the controller: while a task runs, at most one every 5 s.
const HEAD_CHECK_MS = 5000;
let headBusy = false;
let headNext = null;
let headCheckedAt = 0;

function auditAlarm(summary, kept) {
  const box = document.getElementById("audit-alarm");
  box.querySelector('[data-role="summary"]').textContent = summary;
  box.querySelector('[data-role="kept"]').textContent = kept;
  box.hidden = false;
}

async function seenAuditHead(head) {
  const kept = localStorage.getItem(HEAD_KEY);
  if (!kept) { localStorage.setItem(HEAD_KEY, head); return; }
  if (kept === head) return;
  if (headBusy) { headNext = head; return; }
  headBusy = true;
  const wait = headCheckedAt + HEAD_CHECK_MS - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  headCheckedAt = Date.now();
  try {
    // Another tab may have moved the kept head on meanwhile.
    const against = localStorage.getItem(HEAD_KEY) || kept;
    const found = await api("GET", `/api/v1/audit/verify?head=${encodeURIComponent(against)}`);
    if (found.ok) {
      const h = found.report.head;
      localStorage.setItem(HEAD_KEY, `${h.seq}:${h.hash}`);
    } else {
      auditAlarm(found.summary, against);
    }
  } catch (error) {
    // Offline or signed out: the next page or event checks again.
  } finally {
    headBusy = false;
    if (headNext) { const next = headNext; headNext = null; seenAuditHead(next); }
  }
}

function auditPageHead() {
  const shown = document.getElementById("audit");
  if (!shown) return false;
  if (shown.dataset.auditOk === "false") {
    auditAlarm(shown.querySelector('[data-role="verification"] .meta').textContent,
      localStorage.getItem(HEAD_KEY) || shown.dataset.auditHead);
  }
  seenAuditHead(shown.dataset.auditHead);
  return true;
}

async function checkAuditHead() {
  if (auditPageHead()) return;
  const response = await fetch("/api/v1/audit/head", { credentials: "same-origin" }).catch(() => null);
  if (!response || !response.ok) return;
  const head = await response.json();
  seenAuditHead(`${head.seq}:${head.hash}`);
}

// --- notifications: Web Push through the service worker --------------------------------------

function keyBytes(base64url) {
  const padded = base64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - base64url.length % 4) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

async function pushState() {
  const state = document.getElementById("push-state");
  if (!state) return;
  if (!pushSupported()) {
    state.textContent = "This browser cannot receive Web Push (on an iPhone, add the console to the home screen first).";
    state.dataset.state = "unsupported";
    return;
  }
  const registration = await navigator.serviceWorker.register("/sw.js");
  const subscription = await registration.pushManager.getSubscription().catch(() => null);
  state.dataset.state = subscription ? "subscribed" : "not-subscribed";
  state.textContent = subscription
    ? "This browser is subscribed."
    : `This browser is not subscribed (permission: ${Notification.permission}).`;
}

async function pushSubscribe(button) {
  const box = button.closest(".card");
  if (!pushSupported()) throw new Error("this browser cannot receive Web Push");
  const registration = await navigator.serviceWorker.register("/sw.js");
  await navigator.serviceWorker.ready;
  const permission = await Notification.requestPermission();
  if (permission !== "granted") throw new Error(`notifications are ${permission} for this site; allow them in the browser's site settings`);
  const { public_key: key } = await api("GET", "/api/v1/push/key");
  let subscription;
  try {
    subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) });
  } catch (error) {
    throw new Error(`the browser's push service refused the subscription (${error.name}: ${error.message})`);
  }
  await api("POST", "/api/v1/push/subscriptions", subscription.toJSON());
  box.querySelector(".error").hidden = true;
  location.reload();
}

async function pushUnsubscribe() {
  if (pushSupported()) {
    const registration = await navigator.serviceWorker.getRegistration();
    const subscription = registration && await registration.pushManager.getSubscription();
    if (subscription) await subscription.unsubscribe();
  }
  for (const row of document.querySelectorAll("li[data-subscription-id]")) {
    await api("DELETE", `/api/v1/push/subscriptions/${row.dataset.subscriptionId}`);
  }
  location.reload();
}

async function pushTest(button) {
  button.disabled = true;
  const { results } = await api("POST", "/settings/notifications/test");
  const list = document.getElementById("test-results");
  list.replaceChildren(...results.map((r) => {
    const item = document.createElement("li");
    item.dataset.channel = r.channel;
    item.dataset.delivered = String(r.delivered);
    item.textContent = `${r.target}: ${r.delivered ? "sent" : `not sent (${r.error})`}`;
    item.className = r.delivered ? "ok" : "error";
    return item;
  }));
  if (!results.length) {
    const item = document.createElement("li");
    item.textContent = "Nothing to send to: subscribe this device, or set [notify.ntfy] or [notify.webhook].";
    list.append(item);
  }
  list.hidden = false;
  button.disabled = false;
}

// --- countdowns and unread marks -------------------------------------------------------------

function countdown() {
  const now = Date.now() / 1000;
  for (const clock of document.querySelectorAll("time.countdown[data-expires]")) {
    const left = Math.round(Number(clock.dataset.expires) - now);
    const card = clock.closest(".approval");
    if (left <= 0) {
      clock.textContent = "expired";
      card.classList.add("state-expired");
      card.querySelectorAll(".decide button").forEach((b) => { b.disabled = true; });
    } else {
      const minutes = Math.floor(left / 60);
      clock.textContent = `${minutes}:${String(left % 60).padStart(2, "0")} left`;
    }
  }
}

function markUnread() {
  for (const row of document.querySelectorAll("li.thread[data-thread-id]")) {
    const seen = Number(localStorage.getItem(`dispatch.seen.${row.dataset.threadId}`) || 0);
    row.querySelector(".unread").hidden = Number(row.dataset.latest) <= seen;
  }
}

function markSeen() {
  const ids = [...document.querySelectorAll("article.task[data-task-id]")].map((t) => Number(t.dataset.taskId));
  if (threadId && ids.length) localStorage.setItem(`dispatch.seen.${threadId}`, String(Math.max(...ids)));
}

// --- buttons -------------------------------------------------------------------------------

function splitCommand(text) {
  // Program and arguments, as a shell would split them (quotes and backslashes), but no shell.
  const words = [];
  let word = null, quote = null;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quote) {
      if (ch === quote) quote = null;
      else if (ch === "\\" && quote === '"' && i + 1 < text.length) word += text[++i];
      else word += ch;
    } else if (ch === "'" || ch === '"') { quote = ch; word = word ?? ""; }
    else if (ch === "\\" && i + 1 < text.length) { word = (word ?? "") + text[++i]; }
    else if (/\s/.test(ch)) { if (word !== null) { words.push(word); word = null; } }
    else word = (word ?? "") + ch;
  }
  if (quote) throw new Error("a quote is not closed");
  if (word !== null) words.push(word);
  return words;
}

function memoryUrl(path) {
  return "/api/v1/memory/" + path.split("/").map(encodeURIComponent).join("/");
}

async function decide(button, decision, withReason) {
  const id = button.dataset.approvalId;
  const card = button.closest(".approval");
  const payload = { decision };
  if (withReason) payload.reason = card.querySelector("textarea").value.trim() || null;
  card.querySelectorAll(".decide button").forEach((b) => { b.disabled = true; });
  try {
    await api("POST", `/api/v1/approvals/${id}/decision`, payload);
  } catch (error) {
    if (error.message === "signed out") return;
    showError(card, error.message);
  }
  const task = button.closest("article.task");
  if (task) refreshTask(task.dataset.taskId);
  else refreshApproval(id, null);
  refreshPending();
}

document.addEventListener("click", async (event) => {
  const zoomable = event.target.closest("img.zoomable");
  if (zoomable) {
    const dialog = document.getElementById("zoom");
    dialog.querySelector("img").src = zoomable.src;
    dialog.showModal();
    return;
  }
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const action = button.dataset.action;
  try {
    if (action === "cancel" || action === "retry") {
      button.disabled = true;
      const task = await api("POST", `/api/v1/tasks/${button.dataset.taskId}/${action}`);
      refreshTask(button.dataset.taskId);
      if (action === "retry") refreshTask(task.id);
    } else if (action === "approve") {
      await decide(button, "approve", false);
    } else if (action === "deny") {
      await decide(button, "deny", false);
    } else if (action === "deny-reason") {
      await decide(button, "deny", true);
    } else if (action === "memory-delete") {
      if (!confirm(`Forget /memories/${button.dataset.path}?`)) return;
      await api("DELETE", memoryUrl(button.dataset.path));
      location.reload();
    } else if (action === "audit-accept") {
      const response = await fetch("/api/v1/audit/head", { credentials: "same-origin" });
      const head = await response.json();
      localStorage.setItem(HEAD_KEY, `${head.seq}:${head.hash}`);
      document.getElementById("audit-alarm").hidden = true;
    } else if (action === "push-subscribe") {
      await pushSubscribe(button);
    } else if (action === "push-unsubscribe") {
      await pushUnsubscribe();
    } else if (action === "push-test") {
      await pushTest(button);
    } else if (action === "signout") {
      if (!confirm("Sign out? This device's pairing is revoked; pair again to come back.")) return;
      await fetch("/signout", { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
      location.assign("/pair");
    }
  } catch (error) {
    if (error.message !== "signed out") showError(button.closest(".card"), error.message);
    button.disabled = false;
  }
});

// --- forms ---------------------------------------------------------------------------------

async function submitTask(form) {
  const data = new FormData(form);
  const text = data.get("text").trim();
  const folders = [];
  form.querySelectorAll('input[name="folder"]').forEach((box, i) => {
    if (box.checked) folders.push({ path: box.value, mode: form.querySelector(`[name="mode-${i}"]`).value });
  });
  const payload = { thread: body.dataset.threadName, folders };
  if (data.get("kind") === "command") {
    payload.command = splitCommand(text);
  } else {
    payload.kind = "agent";
    payload.prompt = text;
    payload.tools = data.getAll("tool");
    if (data.get("display")) payload.display = data.get("display");
  }
  const task = await api("POST", "/api/v1/tasks", payload);
  form.querySelector("textarea").value = "";
  form.querySelector("details.options").open = false;
  refreshTask(task.id);
}

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-form]");
  if (!form) return;
  event.preventDefault();
  const error = form.querySelector(".error");
  if (error) error.hidden = true;
  const button = form.querySelector('button[type="submit"]');
  if (button) button.disabled = true;
  try {
    const kind = form.dataset.form;
    if (kind === "new-thread") {
      const thread = await api("POST", "/api/v1/threads", { name: form.elements.name.value.trim() });
      location.assign(`/threads/${thread.id}`);
    } else if (kind === "submit-task") {
      await submitTask(form);
    } else if (kind === "memory-save") {
      await api("PUT", memoryUrl(form.dataset.path), { content: form.elements.content.value });
      if (button) button.textContent = "Saved";
    } else if (kind === "memory-new") {
      const path = form.elements.path.value.trim().replace(/^\/?(memories\/)?/, "");
      await api("PUT", memoryUrl(path), { content: form.elements.content.value });
      location.reload();
    }
  } catch (error) {
    if (error.message !== "signed out") showError(form, error.message);
  } finally {
    if (button) button.disabled = false;
  }
});

document.addEventListener("DOMContentLoaded", () => {
  countdown();
  setInterval(countdown, 1000);
  markUnread();
  markSeen();
  connect();
  checkAuditHead();
  document.addEventListener("visibilitychange", wake);
  window.addEventListener("online", wake);
  if (page === "settings") pushState();
  if (location.hash.startsWith("#task-")) {
    const card = document.getElementById(location.hash.slice(1));
    if (card) card.scrollIntoView();
  }
});
