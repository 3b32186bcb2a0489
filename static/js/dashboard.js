/**
 * The demo dashboard served at `/`: wires NotificationSystem to the page and signs in with a token.
 *
 * Token, in this order: `#token=JWT` in the URL (stored, then removed from the address bar), then
 * `localStorage.access_token`, else the sign-in form. In dev mode (a localhost page, or `?dev`) the
 * "Send test SMS" button posts to /api/sms/inbound with an admin token: `#admin_token=JWT`,
 * `localStorage.notify_admin_token`, the form that asks for it, or the user's own token if it is an admin's.
 * `window.notifyOptions`, when a page defines it before this module runs, overrides client options.
 */

import { NotificationSystem } from "./notification-system.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "access_token";
const ADMIN_KEY = "notify_admin_token";
const params = new URLSearchParams(window.location.search);
const devMode = ["localhost", "127.0.0.1", "[::1]"].includes(window.location.hostname) || params.has("dev");

takeTokensFromFragment();

const notifications = new NotificationSystem({
  elements: {
    bell: "#bell",
    badge: "#bell-badge",
    list: "#notification-list",
    toasts: "#toasts",
    status: "#connection-status",
  },
  ...(window.notifyOptions || {}),
});
window.notificationSystem = notifications;

wirePanel();
wireSignIn();
wireActivity();
wirePreferences();
wirePush();
if (devMode) wireDevTools();

if (window.localStorage.getItem(TOKEN_KEY)) showDashboard();
else showSignIn();

// -- sign-in ------------------------------------------------------------------------------------------

function takeTokensFromFragment() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  let found = false;
  if (fragment.get("token")) {
    window.localStorage.setItem(TOKEN_KEY, fragment.get("token"));
    found = true;
  }
  if (fragment.get("admin_token")) {
    window.localStorage.setItem(ADMIN_KEY, fragment.get("admin_token"));
    found = true;
  }
  if (found) history.replaceState(null, "", window.location.pathname + window.location.search);
}

function showDashboard() {
  $("signin").hidden = true;
  $("dashboard").hidden = false;
  $("send-test").hidden = !devMode;
  const claims = decodeClaims(window.localStorage.getItem(TOKEN_KEY));
  $("fact-user").textContent = claims.sub || claims.user_id || "–";
  updateCurl();
  notifications.start();
}

function showSignIn(message) {
  $("dashboard").hidden = true;
  $("send-test").hidden = true;
  $("signin").hidden = false;
  if (message) $("signin-message").textContent = message;
  $("token-input").focus();
}

function wireSignIn() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    window.localStorage.setItem(TOKEN_KEY, token);
    window.location.reload(); // a fresh client: the new token may be another user's
  });
  $("sign-out").addEventListener("click", () => {
    window.localStorage.removeItem(TOKEN_KEY);
    notifications.stop();
    showSignIn("Signed out. Paste a token to sign in again.");
  });
}

function decodeClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return {};
  }
}

// -- the bell's panel ---------------------------------------------------------------------------------

function wirePanel() {
  const bell = $("bell");
  const panel = $("notification-panel");
  const open = (value) => {
    panel.hidden = !value;
    bell.setAttribute("aria-expanded", String(value));
    if (value) (panel.querySelector(".ns-item-body") || $("panel-title")).focus();
  };
  bell.addEventListener("click", () => open(panel.hidden));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !panel.hidden) {
      open(false);
      bell.focus();
    }
  });
  panel.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const items = [...panel.querySelectorAll(".ns-item-body")];
      const at = items.indexOf(document.activeElement);
      const next = items[at + (event.key === "ArrowDown" ? 1 : -1)];
      if (next) {
        event.preventDefault();
        next.focus();
      }
    }
  });
  document.addEventListener("click", (event) => {
    // composedPath: the clicked item may have been re-rendered (and detached) by the click itself
    const path = event.composedPath();
    if (!panel.hidden && !path.includes(panel) && !path.includes(bell)) open(false);
  });
  $("mark-all").addEventListener("click", () => notifications.markAllRead());
  $("delete-read").addEventListener("click", () => notifications.deleteAll({ readOnly: true }));

  const desktop = $("desktop-alerts");
  if (typeof Notification !== "undefined" && Notification.permission === "default") {
    desktop.hidden = false;
    desktop.addEventListener("click", async () => {
      await notifications.requestDesktopPermission();
      desktop.hidden = true;
    });
  }
}

// -- connection facts and activity --------------------------------------------------------------------

function wireActivity() {
  const transport = { live: "WebSocket", polling: "HTTP polling", reconnecting: "reconnecting…",
    connecting: "connecting…", expired: "–", stopped: "–", closed: "–" };
  notifications.addEventListener("status", ({ detail }) => {
    $("fact-transport").textContent = transport[detail.status] || "–";
    if (detail.status === "live" && detail.previous !== "live") log("Connected: live over WebSocket");
    if (detail.status === "reconnecting" && detail.delay !== undefined) {
      const attempt = detail.attempt ? ` (attempt ${detail.attempt} of ${notifications.options.maxReconnectAttempts})` : "";
      log(`Connection lost; retrying in ${(detail.delay / 1000).toFixed(1)} s${attempt}`);
    }
    if (detail.status === "polling" && detail.previous !== "polling") log("WebSocket unavailable: polling over HTTP");
    if (detail.status === "expired") {
      log("Session expired");
      showSignIn("Your session expired. Paste a new token to continue.");
    }
  });
  notifications.addEventListener("resumed", ({ detail }) => {
    if (detail.replayed) log(`Resumed: ${detail.replayed} missed notification${detail.replayed === 1 ? "" : "s"} delivered`);
  });
  notifications.addEventListener("resync", () => log("Too much missed: list reloaded"));
  notifications.addEventListener("deleted", ({ detail }) => {
    const count = detail.ids.length;
    log(detail.all ? "All notifications deleted" : `Deleted ${count} notification${count === 1 ? "" : "s"}`);
  });
  notifications.addEventListener("unread", ({ detail }) => {
    $("fact-unread").textContent = String(detail.count);
    document.title = (detail.count ? `(${detail.count}) ` : "") + "Notifications · namaskah-notify";
  });
  const showSeq = () => {
    $("fact-seq").textContent = notifications.lastSeq === null ? "–" : String(notifications.lastSeq);
  };
  for (const type of ["notification", "connected", "list"]) notifications.addEventListener(type, showSeq);
  notifications.addEventListener("notification", ({ detail }) => {
    if (detail.source !== "live") return;
    log(`Received “${detail.notification.title}”`);
  });
}

function log(text) {
  const list = $("activity");
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  item.append(time, document.createTextNode(text));
  list.prepend(item);
  while (list.children.length > 6) list.lastElementChild.remove();
}

// -- dev tools: send a test SMS -----------------------------------------------------------------------

// -- preferences --------------------------------------------------------------------------------------

/** The preferences card: one mute toggle per type seen, sound, desktop, quiet hours; saved on each change. */
function wirePreferences() {
  const types = new Set();
  const form = $("preferences");
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  $("pref-quiet-tz").value = zone;

  const render = (preferences) => {
    for (const muted of preferences.muted_types) types.add(muted);
    $("pref-sound").checked = preferences.sound;
    $("pref-desktop").checked = preferences.desktop;
    const quiet = preferences.quiet_hours;
    $("pref-quiet").checked = Boolean(quiet);
    if (quiet) {
      $("pref-quiet-start").value = quiet.start;
      $("pref-quiet-end").value = quiet.end;
      $("pref-quiet-tz").value = quiet.tz;
    }
    renderTypes(new Set(preferences.muted_types));
  };
  const renderTypes = (muted) => {
    if (!types.size) return;
    const box = $("pref-types");
    box.replaceChildren(...[...types].sort().map((type) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.dataset.type = type;
      input.checked = muted.has(type);
      label.append(input, ` ${type}`);
      return label;
    }));
  };
  const read = () => ({
    muted_types: [...$("pref-types").querySelectorAll("input:checked")].map((input) => input.dataset.type),
    sound: $("pref-sound").checked,
    desktop: $("pref-desktop").checked,
    quiet_hours: $("pref-quiet").checked
      ? { start: $("pref-quiet-start").value, end: $("pref-quiet-end").value, tz: $("pref-quiet-tz").value.trim() }
      : null,
  });

  notifications.addEventListener("preferences", (event) => render(event.detail.preferences));
  notifications.addEventListener("notification", (event) => {
    const type = event.detail.notification.type;
    if (type && !types.has(type)) {
      types.add(type);
      renderTypes(new Set((notifications.preferences || { muted_types: [] }).muted_types));
    }
  });
  form.addEventListener("submit", (event) => event.preventDefault());
  form.addEventListener("change", async () => {
    try {
      await notifications.savePreferences(read());
      $("pref-result").textContent = "Saved.";
    } catch (err) {
      $("pref-result").textContent = `Not saved: ${err && err.status === 422 ? "check the quiet hours" : err}`;
    }
  });
}

// -- Web Push -----------------------------------------------------------------------------------------

/** "Enable push": permission, the service worker, the subscription posted to the server; then "Disable push". */
function wirePush() {
  const button = $("push-toggle");
  const labels = { enabled: "Disable push", disabled: "Enable push" };
  const show = (state) => {
    button.dataset.state = state;
    button.hidden = !(state in labels);
    button.textContent = labels[state] || "";
  };
  notifications.pushState().then(show, () => show("unsupported"));
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      if (button.dataset.state === "enabled") {
        await notifications.disablePush();
        log("Push notifications off for this browser");
      } else {
        const result = await notifications.enablePush();
        log(result === "enabled" ? "Push notifications on: they arrive while no tab is open"
          : `Push notifications not enabled (permission: ${result})`);
      }
    } catch (err) {
      log(`Push notifications failed: ${err && err.message}`);
    } finally {
      button.disabled = false;
      show(await notifications.pushState().catch(() => "unsupported"));
    }
  });
}

function wireDevTools() {
  document.querySelectorAll(".dev-only").forEach((element) => { element.hidden = false; });
  $("send-test").addEventListener("click", sendTestSms);
  $("send-test-card").addEventListener("click", sendTestSms);
  $("admin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    window.localStorage.setItem(ADMIN_KEY, $("admin-input").value.trim());
    $("admin-input").value = "";
    $("admin-form").hidden = true;
    sendTestSms();
  });
}

function adminToken() {
  const stored = window.localStorage.getItem(ADMIN_KEY);
  if (stored) return stored;
  const own = window.localStorage.getItem(TOKEN_KEY);
  return decodeClaims(own).role === "admin" ? own : null;
}

async function sendTestSms() {
  const result = $("dev-result");
  const token = adminToken();
  if (!token) {
    $("admin-form").hidden = false;
    $("admin-input").focus();
    result.textContent = "Sending needs an admin token.";
    return;
  }
  const claims = decodeClaims(window.localStorage.getItem(TOKEN_KEY));
  const services = ["Google", "WhatsApp", "Telegram", "Amazon", "Microsoft"];
  const random = () => Math.random().toString(36).slice(2, 10);
  const body = {
    user_id: claims.sub || claims.user_id,
    verification_id: `ver_${random()}`,
    service: services[Math.floor(Math.random() * services.length)],
    code: String(Math.floor(100000 + Math.random() * 900000)),
    message_id: `msg_${random()}`,
  };
  try {
    const response = await fetch("/api/sms/inbound", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    if (response.status === 401 || response.status === 403) {
      window.localStorage.removeItem(ADMIN_KEY);
      $("admin-form").hidden = false;
      result.textContent = "That admin token was refused; paste another.";
      return;
    }
    result.textContent = response.ok ? `Sent: ${body.service} code for ${body.user_id}` : `Failed: HTTP ${response.status}`;
  } catch (err) {
    result.textContent = `Failed: ${err.message}`;
  }
}

function updateCurl() {
  const claims = decodeClaims(window.localStorage.getItem(TOKEN_KEY));
  const user = claims.sub || claims.user_id || "demo";
  $("curl-snippet").textContent =
    `curl -X POST ${window.location.origin}/api/notifications \\\n` +
    `  -H "Authorization: Bearer $(notify token admin --admin)" \\\n` +
    `  -H 'content-type: application/json' \\\n` +
    `  -d '{"user_id":"${user}","title":"Hello","message":"From the API"}'`;
}
