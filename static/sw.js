/**
 * sw.js: the service worker of namaskah-notify's browser client, for Web Push. Registered by
 * NotificationSystem.enablePush() with scope "/" (the server sends it with Service-Worker-Allowed: /).
 *
 * A push carries what a tab's `notification` frame carries: {"type":"notification","data":{...}}. It is shown
 * as a system notification (title, message, tag = collapse_key or id) unless data.silent is set (a muted type
 * or quiet hours; the server sends none of those, but a push is never shown against the user's wishes).
 * A click focuses a tab of the app that is open, which then opens the notification as its own click would
 * (marked read, its link followed); with no tab open it opens the link, or the app.
 */

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  const n = notificationOf(event.data);
  if (!n || n.silent) return;
  event.waitUntil(self.registration.showNotification(String(n.title || "Notification"), {
    body: String(n.message || ""),
    tag: String(n.collapse_key || n.id || ""),
    renotify: Boolean(n.collapse_key),
    requireInteraction: n.priority === "high",
    silent: n.priority === "low",
    timestamp: Date.parse(n.created_at) || Date.now(),
    data: { id: n.id, seq: n.seq, link: n.link || null, notification: n },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const data = event.notification.data || {};
  event.waitUntil(openApp(data));
});

async function openApp(data) {
  const tabs = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const tab = tabs.find((client) => client.focused) || tabs.find((client) => client.visibilityState === "visible")
    || tabs[0];
  if (tab) {
    tab.postMessage({ type: "notificationclick", id: data.id, notification: data.notification || null });
    await tab.focus().catch(() => {}); // the tab still opens it when the browser will not bring it forward
    return;
  }
  const link = safeLink(data.link);
  await self.clients.openWindow(link || "/");
}

function notificationOf(data) {
  if (!data) return null;
  try {
    const message = data.json();
    return message && message.type === "notification" && message.data && typeof message.data === "object"
      ? message.data
      : null;
  } catch {
    return null;
  }
}

/** The client's rule (notification-system.js safeLink): http(s) only, and a link without a scheme stays here. */
function safeLink(link) {
  if (typeof link !== "string" || !link || /[\\\u0000-\u001f\u007f]/.test(link)) return null;
  try {
    const url = new URL(link, self.location.origin);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    const absolute = /^\s*[a-z][a-z0-9+.-]*:/i.test(link);
    return absolute || url.origin === self.location.origin ? url.href : null;
  } catch {
    return null;
  }
}
