/**
 * notification-system.js: the browser client of namaskah-notify. A plain ES module, no build step.
 *
 *   import { NotificationSystem } from "/static/js/notification-system.js";
 *   const notifications = new NotificationSystem({ elements: { bell: "#bell", badge: "#badge",
 *     list: "#list", toasts: "#toasts", status: "#status" } });
 *   notifications.addEventListener("notification", (e) => console.log(e.detail.notification));
 *   notifications.start();
 *
 * Wire protocol: CONTRACT.md section 2 (frames) and section 3 (the HTTP polling fallback).
 * The class is an EventTarget; every UI element is optional, so an app can render everything itself
 * from the events. Options and events are described in docs/browser-client.md.
 */

export const DEFAULTS = Object.freeze({
  url: null, // WebSocket endpoint; null: /ws/notifications on this page's host, wss:// under https
  apiBase: null, // HTTP base for /api/...; null: the endpoint's host (this page's host by default)
  getToken: () => window.localStorage.getItem("access_token"),
  tokenInUrl: false, // true: ?token= in the URL (origin document's way); false: first-frame auth
  soundUrl: new URL("../sounds/notification.wav", import.meta.url).href,
  sound: true,
  desktop: true, // a desktop Notification when the page is hidden and permission was granted
  serviceWorkerUrl: "/static/sw.js", // Web Push (enablePush): the service worker and the scope it controls
  serviceWorkerScope: "/",
  pingIntervalMs: 30000,
  pongTimeoutMs: 10000,
  connectTimeoutMs: 10000,
  backoffBaseMs: 1000,
  backoffMaxMs: 16000,
  maxReconnectAttempts: 5,
  pollIntervalMs: 30000,
  wsRetryWhilePollingMs: 60000,
  policyRetryMs: 30000, // after close 1008 (rate limit): wait between half and all of this
  toastDurationMs: 6000,
  maxToasts: 4,
  listLimit: 50,
  random: Math.random,
  navigate: (url) => window.location.assign(url),
  elements: {},
});

const STATUS_LABELS = {
  idle: "Not connected",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  polling: "Polling",
  expired: "Session expired",
  closed: "Disconnected",
  stopped: "Stopped",
};

const CLIENT_CLOSE = 4000; // our own close of a socket we gave up on (dead, timed out, stopped)
const SEEN_LIMIT = 2000;

class HttpError extends Error {
  constructor(status) {
    super(`HTTP ${status}`);
    this.status = status;
  }
}

export class NotificationSystem extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options, elements: { ...(options.elements || {}) } };
    this.websocket = null;
    this.status = "idle";
    this.token = null;
    this.lastSeq = null; // highest seq seen; sent as since_seq on every reconnect
    this.countedThrough = 0; // unread_count already includes every seq up to here
    this.unreadCount = 0;
    this.reconnectAttempts = 0;
    this.items = []; // newest first
    this.seen = new Set();
    this.pendingReads = new Set();
    this.polling = false;
    this.stopped = true;
    this.listLoaded = false;
    this.authRetried = false;
    this.resuming = false;
    this.generation = 0;
    this.timers = {};
    this.keepaliveInterval = null;
    this.audio = null;
    this.soundDeferred = false;
    this.lastSoundAt = 0;
    this.onOnline = () => this.reconnectNow("online");
    this.onVisibility = () => {
      if (document.visibilityState !== "visible") return;
      if (this.status === "live") this.sendPing(); // a sleeping laptop's socket may be dead: find out now
      else this.reconnectNow("visible");
    };
    this.onWorkerMessage = (event) => {
      // A click on a push notification focused this tab: open it as a click here would.
      const message = event.data || {};
      if (message.type === "notificationclick" && message.id) this.openNotification(message.id, message.notification);
    };
  }

  // -- lifecycle -----------------------------------------------------------------------------------

  /** Connect (or reconnect after stop() or an expired session). */
  start() {
    this.stopped = false;
    this.authRetried = false;
    this.reconnectAttempts = 0;
    window.addEventListener("online", this.onOnline);
    document.addEventListener("visibilitychange", this.onVisibility);
    if (navigator.serviceWorker) {
      navigator.serviceWorker.addEventListener("message", this.onWorkerMessage);
      navigator.serviceWorker.startMessages();
    }
    this.bindBell();
    this.updateBadge();
    this.initializeWebSocket();
    return this;
  }

  /** Close the socket, stop polling and every timer; start() again to resume where it stopped. */
  stop(status = "stopped", detail = {}) {
    this.stopped = true;
    this.generation += 1;
    for (const name of Object.keys(this.timers)) this.clearTimer(name);
    this.stopKeepalive();
    this.stopPolling();
    window.removeEventListener("online", this.onOnline);
    document.removeEventListener("visibilitychange", this.onVisibility);
    if (navigator.serviceWorker) navigator.serviceWorker.removeEventListener("message", this.onWorkerMessage);
    this.closeSocket(1000, "client stopped");
    this.setStatus(status, detail);
  }

  // -- the WebSocket -------------------------------------------------------------------------------

  /** Open one WebSocket attempt; the outcome arrives as a `connected` frame or a close. */
  async initializeWebSocket(token = null) {
    if (this.stopped) return;
    const generation = ++this.generation;
    this.clearTimer("reconnect");
    this.clearTimer("wsRetry");
    this.closeSocket(CLIENT_CLOSE, "replaced");
    if (!this.polling && this.status !== "reconnecting") this.setStatus("connecting");
    if (!token) {
      try {
        token = await this.options.getToken({ reason: "connect" });
      } catch {
        token = null;
      }
    }
    if (generation !== this.generation || this.stopped) return;
    if (!token) {
      this.stop("expired", { reason: "no token" });
      return;
    }
    this.token = token;
    let ws;
    try {
      ws = new WebSocket(this.socketUrl());
    } catch (err) {
      this.onSocketClosed(1006, String(err && err.message));
      return;
    }
    this.websocket = ws;
    this.authenticated = false;
    this.dispatch("attempt", { url: this.socketUrl(false), polling: this.polling });
    this.setTimer("connect", this.options.connectTimeoutMs, () => this.dropSocket("connect timeout"));
    ws.onopen = () => {
      if (!this.options.tokenInUrl) ws.send(JSON.stringify({ type: "auth", token }));
    };
    ws.onmessage = (event) => this.handleWebSocketMessage(event);
    ws.onclose = (event) => {
      if (ws === this.websocket) this.onSocketClosed(event.code, event.reason);
    };
  }

  /** The endpoint with since_seq (always, once a seq is known) and, if configured, the token. */
  socketUrl(withToken = true) {
    const base = this.options.url || "/ws/notifications";
    const url = new URL(base, window.location.href);
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    if (window.location.protocol === "https:" && url.protocol === "ws:" && url.host === window.location.host) {
      url.protocol = "wss:";
    }
    if (this.lastSeq !== null) url.searchParams.set("since_seq", String(this.lastSeq));
    if (withToken && this.options.tokenInUrl && this.token) url.searchParams.set("token", this.token);
    return url.href;
  }

  /** Route one server frame by type. */
  handleWebSocketMessage(event) {
    this.clearTimer("pong"); // any frame proves the connection is alive
    const raw = event.data;
    if (raw === "pong") return;
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      return;
    }
    switch (frame && frame.type) {
      case "connected":
        this.onConnected(frame);
        break;
      case "notification":
        this.handleNewNotification(frame.data, this.resuming ? "replay" : "live");
        break;
      case "read":
        this.applyRead(frame);
        break;
      case "unread":
        this.applyUnread(frame);
        break;
      case "deleted":
        this.applyDeleted(frame);
        break;
      case "preferences":
        this.applyPreferences(frame.preferences);
        break;
      case "resumed":
        this.resuming = false;
        this.dispatch("resumed", { replayed: frame.replayed, lastSeq: frame.last_seq });
        break;
      case "resync_required":
        this.resuming = false;
        this.dispatch("resync", { lastSeq: frame.last_seq });
        this.loadList({ resync: true });
        break;
      case "token_expiring":
        this.refreshToken();
        break;
      case "error":
        this.dispatch("error", { code: frame.code, message: frame.message });
        break;
      default:
        break; // pong, token_refreshed, and types added later
    }
  }

  onConnected(frame) {
    this.clearTimer("connect");
    this.authenticated = true;
    this.reconnectAttempts = 0;
    this.authRetried = false;
    this.stopPolling();
    this.resuming = this.lastSeq !== null; // we sent since_seq: the replay follows, then `resumed`
    this.countedThrough = frame.last_seq;
    this.setUnread(frame.unread_count);
    if (this.lastSeq === null) this.lastSeq = frame.last_seq;
    if (!this.listLoaded) this.loadList();
    if (!this.preferences) this.loadPreferences();
    this.setStatus("live", { connectionId: frame.connection_id, userId: frame.user_id });
    this.dispatch("connected", { userId: frame.user_id, connectionId: frame.connection_id,
      unreadCount: frame.unread_count, lastSeq: frame.last_seq });
    this.startKeepalive();
    this.flushPendingReads();
  }

  /** A socket ended (or we gave up on it): decide by close code what happens next. */
  onSocketClosed(code, reason = "") {
    this.websocket = null;
    this.clearTimer("connect");
    this.clearTimer("pong");
    this.stopKeepalive();
    this.dispatch("disconnected", { code, reason });
    if (this.stopped) return;
    if (code === 4401) {
      this.onUnauthorized(reason);
      return;
    }
    if (this.polling) {
      this.scheduleWsRetry(); // one failed retry while polling: try again later, keep polling
      return;
    }
    if (code === 1000) {
      this.setStatus("closed", { code, reason });
      return;
    }
    if (code === 4403 || code === 4429) {
      this.startPolling({ code, reason }); // refused for now: HTTP still delivers, no tight loop
      return;
    }
    if (code === 1008) {
      const wait = this.options.policyRetryMs * (0.5 + this.options.random() / 2);
      this.setStatus("reconnecting", { code, reason, delay: Math.round(wait) });
      this.setTimer("reconnect", wait, () => this.initializeWebSocket());
      return;
    }
    if (code === 1001 || code === 1012) this.reconnectAttempts = 0; // planned restart: a fresh series
    this.scheduleReconnect({ code, reason });
  }

  /** Backoff base·2^n capped at max, full jitter; after maxReconnectAttempts, fall back to polling. */
  scheduleReconnect(detail = {}) {
    if (this.stopped) return;
    const o = this.options;
    if (this.reconnectAttempts >= o.maxReconnectAttempts) {
      this.startPolling(detail);
      return;
    }
    const cap = Math.min(o.backoffMaxMs, o.backoffBaseMs * 2 ** this.reconnectAttempts);
    const delay = Math.round(o.random() * cap);
    this.reconnectAttempts += 1;
    this.setStatus("reconnecting", { ...detail, attempt: this.reconnectAttempts, delay, cap });
    this.setTimer("reconnect", delay, () => this.initializeWebSocket());
  }

  /** The browser came online or the tab became visible: try now instead of waiting out a timer. */
  reconnectNow(why) {
    if (this.stopped || this.status === "live" || this.websocket) return;
    this.dispatch("wake", { reason: why });
    this.initializeWebSocket();
  }

  async onUnauthorized(reason) {
    const refused = this.token;
    if (!this.authRetried) {
      this.authRetried = true;
      let fresh = null;
      try {
        fresh = await this.options.getToken({ reason: "unauthorized", detail: reason });
      } catch {
        fresh = null;
      }
      if (this.stopped) return;
      if (fresh && fresh !== refused) {
        if (this.polling) this.poll(fresh);
        else this.initializeWebSocket(fresh);
        return;
      }
    }
    this.stop("expired", { code: 4401, reason: reason || "token refused" });
  }

  async refreshToken() {
    let fresh = null;
    try {
      fresh = await this.options.getToken({ reason: "expiring" });
    } catch {
      return;
    }
    if (fresh && fresh !== this.token && this.send({ type: "refresh_token", token: fresh })) this.token = fresh;
  }

  send(frame) {
    const ws = this.websocket;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.authenticated) return false;
    ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    return true;
  }

  /** Give up on the current socket without waiting for its close handshake (it may be dead). */
  dropSocket(reason) {
    if (!this.websocket) return;
    this.closeSocket(CLIENT_CLOSE, reason);
    this.onSocketClosed(1006, reason);
  }

  closeSocket(code, reason) {
    const ws = this.websocket;
    if (!ws) return;
    this.websocket = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // already closing
    }
  }

  // -- keepalive -----------------------------------------------------------------------------------

  /** Text `ping` every pingIntervalMs; no frame back within pongTimeoutMs means the socket is dead. */
  startKeepalive() {
    this.stopKeepalive();
    this.keepaliveInterval = setInterval(() => this.sendPing(), this.options.pingIntervalMs);
  }

  stopKeepalive() {
    if (this.keepaliveInterval !== null) clearInterval(this.keepaliveInterval);
    this.keepaliveInterval = null;
    this.clearTimer("pong");
  }

  sendPing() {
    if (!this.send("ping") || this.timers.pong) return;
    this.setTimer("pong", this.options.pongTimeoutMs, () => this.dropSocket("pong timeout"));
  }

  // -- polling fallback ----------------------------------------------------------------------------

  startPolling(detail = {}) {
    if (this.stopped) return;
    if (!this.polling) {
      this.polling = true;
      this.timers.poll = setInterval(() => this.poll(), this.options.pollIntervalMs);
      this.poll();
    }
    this.setStatus("polling", detail);
    this.scheduleWsRetry();
  }

  stopPolling() {
    if (this.timers.poll) clearInterval(this.timers.poll);
    delete this.timers.poll;
    this.polling = false;
    this.clearTimer("wsRetry");
  }

  scheduleWsRetry() {
    this.setTimer("wsRetry", this.options.wsRetryWhilePollingMs, () => this.initializeWebSocket());
  }

  /** GET /api/notifications?since_seq=: everything after the last seq, oldest first. */
  async poll(token = null) {
    if (this.pollInFlight || this.stopped) return;
    this.pollInFlight = true;
    try {
      if (token) this.token = token;
      if (this.lastSeq === null) {
        await this.loadList();
        return;
      }
      for (let pages = 0; pages < 20; pages += 1) {
        const body = await this.api(`/api/notifications?since_seq=${this.lastSeq}&limit=100`);
        this.countedThrough = Math.max(this.countedThrough, body.last_seq);
        for (const item of body.items) this.handleNewNotification(item, "poll");
        this.setUnread(body.unread_count);
        if (!body.has_more) break;
      }
      this.flushPendingReads();
    } catch (err) {
      this.onHttpError(err);
    } finally {
      this.pollInFlight = false;
    }
  }

  /** The newest page over HTTP: first load, and after `resync_required`. */
  async loadList({ resync = false } = {}) {
    try {
      const body = await this.api(`/api/notifications?limit=${this.options.listLimit}`);
      if (resync) {
        this.items = [];
        this.seen.clear();
        this.renderList();
      }
      for (const item of body.items) this.remember(item);
      this.items.sort((a, b) => b.seq - a.seq);
      this.renderList();
      this.listLoaded = true;
      this.countedThrough = Math.max(this.countedThrough, body.last_seq);
      if (resync || this.lastSeq === null || body.last_seq > this.lastSeq) this.lastSeq = body.last_seq;
      this.setUnread(body.unread_count);
      this.dispatch("list", { items: this.items.slice(), resync });
    } catch (err) {
      this.onHttpError(err);
    }
  }

  onHttpError(err) {
    if (err instanceof HttpError && err.status === 401) this.onUnauthorized("HTTP 401");
    else this.dispatch("error", { code: "http", message: String(err && err.message) });
  }

  async api(path, { method = "GET", keepalive = false, body = undefined } = {}) {
    const token = this.token || (await this.options.getToken({ reason: "http" }));
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(this.apiUrl(path), {
      method,
      keepalive,
      cache: "no-store",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw new HttpError(response.status);
    return response.status === 204 ? null : response.json();
  }

  apiUrl(path) {
    let base = this.options.apiBase;
    if (base === null || base === undefined) {
      const endpoint = new URL(this.options.url || "/", window.location.href);
      endpoint.protocol = endpoint.protocol.replace(/^ws/, "http");
      base = endpoint.origin;
    }
    return base.replace(/\/$/, "") + path;
  }

  // -- preferences ---------------------------------------------------------------------------------

  /** The user's preferences, kept by the server: read once connected, then updated by every tab's changes. */
  async loadPreferences() {
    try {
      this.applyPreferences(await this.api("/api/preferences"));
    } catch (err) {
      this.onHttpError(err);
    }
  }

  /** Replace the user's preferences; every tab of theirs (this one too) gets them back at once. */
  async savePreferences(preferences) {
    const stored = await this.api("/api/preferences", { method: "PUT", body: preferences });
    this.applyPreferences(stored);
    return stored;
  }

  applyPreferences(preferences) {
    if (!preferences || typeof preferences !== "object") return;
    this.preferences = preferences;
    // The page's own options stay the ceiling: preferences can turn sound and desktop off, not force them on.
    this.configured = this.configured || { sound: this.options.sound, desktop: this.options.desktop };
    this.options.sound = Boolean(this.configured.sound) && preferences.sound !== false;
    this.options.desktop = Boolean(this.configured.desktop) && preferences.desktop !== false;
    this.dispatch("preferences", { preferences });
  }

  // -- notifications -------------------------------------------------------------------------------

  /** One notification from any path (live, replay, poll): dedupe, count, show, sound, ack. */
  handleNewNotification(notification, source = "live") {
    const n = notification;
    if (!n || typeof n.id !== "string" || this.seen.has(n.id)) return false;
    if (this.lastSeq === null || n.seq > this.lastSeq) this.lastSeq = n.seq;
    if (source !== "poll") this.send({ type: "ack", seq: n.seq });
    if (isExpired(n) || this.isCollapsedBy(n)) return false; // past its expiry, or a newer one replaced it
    if (n.seq > this.countedThrough) {
      this.countedThrough = n.seq;
      if (!n.is_read) this.setUnread(this.unreadCount + 1);
    }
    this.collapseOlder(n);
    this.remember(n);
    this.prependNotificationToList(n);
    this.expireLater(n);
    // Low priority, or silenced by the user's preferences (a muted type, quiet hours): list and badge only.
    if (!n.is_read && n.priority !== "low" && !n.silent) {
      this.showToast(n);
      this.playSound();
      this.showDesktopNotification(n);
    }
    this.dispatch("notification", { notification: n, source });
    return true;
  }

  /** A newer notification with the same collapse key is already here: this older one is replaced. */
  isCollapsedBy(n) {
    return Boolean(n.collapse_key) && this.items.some((item) => item.collapse_key === n.collapse_key
      && item.seq > n.seq);
  }

  /** Replace the older notifications with ``n``'s collapse key (like the Notifications API's ``tag``): out
   * of the list and the toasts, and, if unread, out of the badge (the server stopped counting them). */
  collapseOlder(n) {
    if (!n.collapse_key) return;
    const older = this.items.filter((item) => item.collapse_key === n.collapse_key && item.seq < n.seq);
    for (const item of older) this.removeItem(item.id);
    const box = this.el("toasts");
    for (const toast of box ? [...box.children] : []) {
      if (toast.dataset.collapseKey === n.collapse_key) this.dismissToast(toast);
    }
  }

  /** Take one notification out of the list (and the badge, if it was unread). */
  removeItem(id) {
    const index = this.items.findIndex((item) => item.id === id);
    if (index < 0) return;
    const [item] = this.items.splice(index, 1);
    if (!item.is_read) this.setUnread(Math.max(0, this.unreadCount - 1));
    const list = this.el("list");
    const element = list && list.querySelector(`[data-id="${CSS.escape(id)}"]`);
    if (element) element.remove();
  }

  /** A notification with ``expires_at`` leaves the list when it expires. */
  expireLater(n) {
    if (!n.expires_at) return;
    const left = Date.parse(n.expires_at) - Date.now();
    if (Number.isFinite(left)) setTimeout(() => this.removeItem(n.id), Math.min(Math.max(left, 0), 2 ** 31 - 1));
  }

  remember(n) {
    if (this.seen.has(n.id)) {
      const known = this.items.find((item) => item.id === n.id);
      if (known && n.is_read && !known.is_read) known.is_read = true;
      return;
    }
    this.seen.add(n.id);
    if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value);
    this.items.push({ ...n });
    this.items.sort((a, b) => b.seq - a.seq);
    if (this.items.length > this.options.listLimit) this.items.length = this.options.listLimit;
  }

  /** Insert one notification's element in the list, newest first (at the top unless it is older). */
  prependNotificationToList(n) {
    const list = this.el("list");
    if (!list) return;
    const existing = list.querySelector(`[data-id="${CSS.escape(n.id)}"]`);
    if (existing) existing.remove();
    const element = this.renderItem(this.items.find((item) => item.id === n.id) || n);
    const after = [...list.children].find((child) => Number(child.dataset.seq) < n.seq);
    list.insertBefore(element, after || null);
    while (list.children.length > this.options.listLimit) list.lastElementChild.remove();
  }

  renderList() {
    const list = this.el("list");
    if (!list) return;
    list.replaceChildren(...this.items.map((n) => this.renderItem(n)));
  }

  renderItem(n) {
    const li = document.createElement("li");
    li.className = `ns-item${n.is_read ? "" : " ns-unread"}`;
    li.dataset.id = n.id;
    li.dataset.seq = String(n.seq);
    li.dataset.type = n.type || "info";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "ns-item-body";
    const title = span("ns-item-title", n.title);
    const message = span("ns-item-message", n.message);
    const time = document.createElement("time");
    time.className = "ns-item-time";
    time.dateTime = n.created_at || "";
    time.textContent = relativeTime(n.created_at);
    const state = span("ns-sr-only", n.is_read ? "" : "Unread: ");
    button.append(state, title, message, time);
    button.addEventListener("click", () => this.openNotification(n.id));
    const actions = document.createElement("span");
    actions.className = "ns-item-actions";
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "ns-item-toggle";
    toggle.textContent = n.is_read ? "Mark unread" : "Mark read";
    toggle.setAttribute("aria-label", `${toggle.textContent}: ${n.title}`);
    toggle.addEventListener("click", () => (n.is_read ? this.markUnread(n.id) : this.markRead(n.id)));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "ns-item-delete";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete: ${n.title}`);
    remove.addEventListener("click", () => this.deleteNotification(n.id));
    actions.append(toggle, remove);
    li.append(button, actions);
    return li;
  }

  /** Toast in the aria-live region; auto-hides, pauses while hovered or focused. */
  showToast(n) {
    const box = this.el("toasts");
    if (!box) return;
    const toast = document.createElement("div");
    toast.className = n.priority === "high" ? "ns-toast ns-high" : "ns-toast";
    toast.dataset.id = n.id;
    if (n.collapse_key) toast.dataset.collapseKey = n.collapse_key;
    toast.dataset.type = n.type || "info";
    const body = document.createElement("button");
    body.type = "button";
    body.className = "ns-toast-body";
    body.append(span("ns-toast-title", n.title), span("ns-toast-message", n.message));
    body.addEventListener("click", () => {
      this.dismissToast(toast);
      this.openNotification(n.id, n);
    });
    const close = document.createElement("button");
    close.type = "button";
    close.className = "ns-toast-close";
    close.setAttribute("aria-label", "Dismiss notification");
    close.textContent = "×";
    close.addEventListener("click", () => this.dismissToast(toast));
    toast.append(body, close);
    box.prepend(toast);
    while (box.children.length > this.options.maxToasts) box.lastElementChild.remove();
    let timer = setTimeout(() => this.dismissToast(toast), this.options.toastDurationMs);
    const pause = () => clearTimeout(timer);
    const resume = () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.dismissToast(toast), this.options.toastDurationMs / 2);
    };
    toast.addEventListener("mouseenter", pause);
    toast.addEventListener("focusin", pause);
    toast.addEventListener("mouseleave", resume);
    toast.addEventListener("focusout", resume);
  }

  dismissToast(toast) {
    if (!toast.isConnected || toast.classList.contains("ns-leaving")) return;
    toast.classList.add("ns-leaving");
    setTimeout(() => toast.remove(), 200);
  }

  /** The notification sound; when autoplay is refused, it plays on the first click or key instead. */
  playSound() {
    const o = this.options;
    if (!o.sound || !o.soundUrl) return;
    const now = Date.now();
    if (now - this.lastSoundAt < 400) return; // a burst of notifications rings once
    this.lastSoundAt = now;
    try {
      if (!this.audio) {
        this.audio = new Audio(o.soundUrl);
        this.audio.preload = "auto";
      }
      this.audio.currentTime = 0;
      const playing = this.audio.play();
      if (playing && typeof playing.then === "function") {
        playing.then(() => this.dispatch("sound", { played: true }), (err) => this.deferSound(err));
      }
    } catch (err) {
      this.deferSound(err);
    }
  }

  deferSound(err) {
    const blocked = err && err.name === "NotAllowedError";
    this.dispatch("sound", { played: false, blocked, error: err && err.name });
    if (!blocked || this.soundDeferred) return;
    this.soundDeferred = true;
    const events = ["pointerdown", "keydown", "touchstart"];
    const onGesture = () => {
      events.forEach((type) => document.removeEventListener(type, onGesture, true));
      this.soundDeferred = false;
      try {
        this.audio.currentTime = 0;
        Promise.resolve(this.audio.play()).then(
          () => this.dispatch("sound", { played: true, deferred: true }),
          () => {},
        );
      } catch {
        // a sound is a nicety; never let it break the page
      }
    };
    events.forEach((type) => document.addEventListener(type, onGesture, true));
  }

  showDesktopNotification(n) {
    if (!this.options.desktop || document.visibilityState !== "hidden") return;
    if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
    try {
      const desktop = new Notification(n.title, { body: n.message, tag: n.collapse_key || n.id,
        renotify: Boolean(n.collapse_key), requireInteraction: n.priority === "high" });
      desktop.onclick = () => {
        window.focus();
        desktop.close();
        this.openNotification(n.id, n);
      };
    } catch {
      // some browsers only allow desktop notifications from a service worker
    }
  }

  /** Ask for desktop notification permission; call it from a click. */
  async requestDesktopPermission() {
    if (typeof Notification === "undefined") return "unsupported";
    return Notification.requestPermission();
  }

  // -- Web Push ------------------------------------------------------------------------------------

  /**
   * Pushes while no tab is open: asks for permission (call it from a click), registers the service worker,
   * subscribes with the server's VAPID key and posts the subscription. Resolves to "enabled", or to the
   * permission when it is not granted ("denied", "default"), or "unsupported".
   */
  async enablePush() {
    if (!pushSupported()) return "unsupported";
    const permission = await Notification.requestPermission();
    if (permission !== "granted") return permission;
    const registration = await navigator.serviceWorker.register(this.options.serviceWorkerUrl,
      { scope: this.options.serviceWorkerScope });
    await activated(registration);
    const { key } = await this.api("/api/push/vapid-public-key");
    const serverKey = fromBase64Url(key);
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameBytes(subscription.options.applicationServerKey, serverKey)) {
      await subscription.unsubscribe(); // made for another server key: the push service would refuse our pushes
      subscription = null;
    }
    subscription = subscription
      || (await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: serverKey }));
    await this.api("/api/push/subscriptions", { method: "POST", body: subscription.toJSON() });
    this.dispatch("push", { enabled: true });
    return "enabled";
  }

  /** No more pushes to this browser: the server forgets the subscription, then the browser drops it. */
  async disablePush() {
    const subscription = await this.pushSubscription();
    if (subscription) {
      await this.api("/api/push/subscriptions", { method: "DELETE", body: { endpoint: subscription.endpoint } });
      await subscription.unsubscribe();
    }
    this.dispatch("push", { enabled: false });
    return Boolean(subscription);
  }

  /** What a push button should offer: "enabled", "disabled", "denied" or "unsupported". */
  async pushState() {
    if (!pushSupported()) return "unsupported";
    if (Notification.permission === "denied") return "denied";
    return (await this.pushSubscription()) ? "enabled" : "disabled";
  }

  /** This browser's push subscription for the app, or null. */
  async pushSubscription() {
    if (!pushSupported()) return null;
    const registration = await navigator.serviceWorker.getRegistration(this.options.serviceWorkerScope);
    return registration ? registration.pushManager.getSubscription() : null;
  }

  // -- reading -------------------------------------------------------------------------------------

  /** A click on a toast, list item or desktop notification: mark it read, then follow its link. */
  openNotification(id, fallback = null) {
    const n = this.items.find((item) => item.id === id) || fallback;
    this.markRead(id);
    const link = n && safeLink(n.link);
    if (!link) return;
    this.dispatch("open", { notification: n, link });
    this.whenFlushed().then(() => this.options.navigate(link));
  }

  /** Let a mark_read frame leave before a navigation closes the socket. */
  whenFlushed(limitMs = 500) {
    const started = Date.now();
    return new Promise((resolve) => {
      const check = () => {
        const ws = this.websocket;
        if (!ws || ws.bufferedAmount === 0 || Date.now() - started > limitMs) resolve();
        else setTimeout(check, 10);
      };
      check();
    });
  }

  /** Over the WebSocket when live, else over HTTP; if both fail, again once reconnected. */
  markRead(id) {
    const n = this.items.find((item) => item.id === id);
    if (n && !n.is_read) {
      n.is_read = true;
      this.setUnread(Math.max(0, this.unreadCount - 1));
      this.updateItem(n);
    }
    if (this.send({ type: "mark_read", notification_id: id })) return;
    this.api(`/api/notifications/${encodeURIComponent(id)}/read`, { method: "POST", keepalive: true })
      .then(() => this.pendingReads.delete(id))
      .catch((err) => {
        if (!(err instanceof HttpError && err.status === 404)) this.pendingReads.add(id);
      });
  }

  markAllRead() {
    for (const n of this.items) {
      if (!n.is_read) {
        n.is_read = true;
        this.updateItem(n);
      }
    }
    this.setUnread(0);
    if (this.send({ type: "mark_all_read" })) return;
    this.api("/api/notifications/read-all", { method: "POST", keepalive: true })
      .catch(() => this.pendingReads.add("*"));
  }

  flushPendingReads() {
    const ids = [...this.pendingReads];
    this.pendingReads.clear();
    for (const id of ids) {
      if (id === "*") this.markAllRead();
      else this.markRead(id);
    }
  }

  /** Mark one unread again (over HTTP); every tab gets an `unread` frame. */
  markUnread(id) {
    const n = this.items.find((item) => item.id === id);
    if (n && n.is_read) {
      n.is_read = false;
      this.setUnread(this.unreadCount + 1);
      this.updateItem(n);
    }
    return this.api(`/api/notifications/${encodeURIComponent(id)}/unread`, { method: "POST" })
      .catch((err) => this.onHttpError(err));
  }

  /** Delete one (over HTTP): it leaves this tab at once, the others when their `deleted` frame arrives. */
  deleteNotification(id) {
    const element = this.el("list")?.querySelector(`[data-id="${CSS.escape(id)}"]`);
    const next = element && element.contains(document.activeElement)
      ? (element.nextElementSibling || element.previousElementSibling) : null;
    this.removeItem(id);
    this.dismissToastOf(id);
    if (next) next.querySelector("button").focus(); // keyboard users land on the neighbouring item
    return this.api(`/api/notifications/${encodeURIComponent(id)}`, { method: "DELETE" })
      .catch((err) => {
        if (err instanceof HttpError && err.status === 404) return; // gone already
        this.onHttpError(err);
        this.loadList({ resync: true }); // put back what is still there
      });
  }

  /** Delete all of the user's notifications, or with `readOnly` the read ones (over HTTP). */
  deleteAll({ readOnly = false } = {}) {
    for (const n of [...this.items]) {
      if (!readOnly || n.is_read) this.removeItem(n.id);
    }
    return this.api(`/api/notifications${readOnly ? "?read=true" : ""}`, { method: "DELETE" })
      .then((body) => this.setUnread(body.unread_count))
      .catch((err) => {
        this.onHttpError(err);
        this.loadList({ resync: true });
      });
  }

  /** A `deleted` frame: notifications were deleted in some tab, or over HTTP (`all`: every one). */
  applyDeleted(frame) {
    const ids = frame.all ? this.items.map((n) => n.id) : frame.notification_ids || [];
    for (const id of ids) {
      this.removeItem(id);
      this.dismissToastOf(id);
    }
    this.setUnread(frame.unread_count);
    this.dispatch("deleted", { ids: frame.all ? [] : [...ids], all: Boolean(frame.all),
      unreadCount: frame.unread_count });
  }

  /** An `unread` frame: something was marked unread again, in any tab or over HTTP. */
  applyUnread(frame) {
    const ids = new Set(frame.notification_ids || []);
    for (const n of this.items) {
      if (n.is_read && ids.has(n.id)) {
        n.is_read = false;
        this.updateItem(n);
      }
    }
    this.setUnread(frame.unread_count);
    this.dispatch("markedunread", { ids: [...ids], unreadCount: frame.unread_count });
  }

  dismissToastOf(id) {
    const toast = this.el("toasts")?.querySelector(`[data-id="${CSS.escape(id)}"]`);
    if (toast) this.dismissToast(toast);
  }

  /** A `read` frame: another tab (or this one, or HTTP) marked something read. */
  applyRead(frame) {
    const ids = new Set(frame.notification_ids || []);
    for (const n of this.items) {
      if (!n.is_read && (frame.all || ids.has(n.id))) {
        n.is_read = true;
        this.updateItem(n);
      }
    }
    this.setUnread(frame.unread_count);
    this.dispatch("read", { ids: [...ids], all: Boolean(frame.all), unreadCount: frame.unread_count });
  }

  updateItem(n) {
    const list = this.el("list");
    const element = list && list.querySelector(`[data-id="${CSS.escape(n.id)}"]`);
    if (element) {
      const focused = element.contains(document.activeElement) ? document.activeElement.className : null;
      const fresh = this.renderItem(n);
      element.replaceWith(fresh);
      // Keyboard users stay where they were: on the same button of the item.
      if (focused !== null) (fresh.querySelector(`.${focused}`) || fresh.querySelector("button")).focus();
    }
    const toast = this.el("toasts")?.querySelector(`[data-id="${CSS.escape(n.id)}"]`);
    if (toast && n.is_read) this.dismissToast(toast);
  }

  // -- badge, bell and status ----------------------------------------------------------------------

  setUnread(count) {
    const value = Math.max(0, Number(count) || 0);
    const changed = value !== this.unreadCount;
    this.unreadCount = value;
    this.updateBadge();
    if (changed) this.dispatch("unread", { count: value });
  }

  updateBadge() {
    const count = this.unreadCount;
    const badge = this.el("badge");
    if (badge) {
      badge.textContent = count > 99 ? "99+" : String(count);
      badge.hidden = count === 0;
    }
    const bell = this.el("bell");
    if (bell) {
      const label = count === 0 ? "no unread" : `${count} unread`;
      bell.setAttribute("aria-label", `Notifications, ${label}`);
      bell.dataset.count = String(count);
    }
  }

  /** A bell element that is not a <button> still gets a role, focus and the keyboard. */
  bindBell() {
    const bell = this.el("bell");
    if (!bell || bell.tagName === "BUTTON" || bell.dataset.nsBound) return;
    bell.dataset.nsBound = "1";
    bell.setAttribute("role", "button");
    bell.tabIndex = 0;
    bell.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        bell.click();
      }
    });
  }

  setStatus(status, detail = {}) {
    const previous = this.status;
    this.status = status;
    const element = this.el("status");
    if (element) {
      element.dataset.status = status;
      element.textContent = STATUS_LABELS[status] || status;
    }
    this.dispatch("status", { status, previous, ...detail });
  }

  // -- small helpers -------------------------------------------------------------------------------

  el(name) {
    const hook = this.options.elements[name];
    if (!hook) return null;
    return typeof hook === "string" ? document.querySelector(hook) : hook;
  }

  setTimer(name, ms, callback) {
    this.clearTimer(name);
    this.timers[name] = setTimeout(() => {
      delete this.timers[name];
      callback();
    }, ms);
  }

  clearTimer(name) {
    if (this.timers[name] === undefined) return;
    clearTimeout(this.timers[name]);
    clearInterval(this.timers[name]);
    delete this.timers[name];
  }

  dispatch(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && typeof Notification !== "undefined";
}

/** Resolves once the registration's worker is active (pushManager.subscribe needs one). */
function activated(registration) {
  if (registration.active) return Promise.resolve(registration);
  const worker = registration.installing || registration.waiting;
  return new Promise((resolve, reject) => {
    const check = () => {
      if (worker.state === "activated") resolve(registration);
      else if (worker.state === "redundant") reject(new Error("the service worker failed to install"));
    };
    worker.addEventListener("statechange", check);
    check();
  });
}

function fromBase64Url(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function sameBytes(buffer, bytes) {
  if (!buffer) return false;
  const view = new Uint8Array(buffer);
  return view.length === bytes.length && view.every((b, i) => b === bytes[i]);
}

/** True once a notification's ``expires_at`` has passed. */
function isExpired(n) {
  return Boolean(n.expires_at) && Date.parse(n.expires_at) <= Date.now();
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text || "";
  return element;
}

/**
 * Only same-site paths and http(s) links are followed (never javascript: and the like). A link without a
 * scheme must stay on this site: "//host", "/\host" (a backslash reads as "/") and the like are refused, and
 * so is any backslash or control character (URL parsing drops tabs and newlines, which hides such tricks).
 */
export function safeLink(link) {
  if (typeof link !== "string" || !link || /[\\\u0000-\u001f\u007f]/.test(link)) return null;
  try {
    const url = new URL(link, window.location.href);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    const absolute = /^\s*[a-z][a-z0-9+.-]*:/i.test(link);
    return absolute || url.origin === window.location.origin ? url.href : null;
  } catch {
    return null;
  }
}

export function relativeTime(iso, now = Date.now()) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "";
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 45) return "just now";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  return new Date(then).toLocaleDateString(undefined, { month: "short", day: "numeric" });
}
