// The console's service worker: shows the controller's Web Push notifications and opens the
// approval card or the task when one is tapped. It caches nothing (the console is live state).
"use strict";

self.addEventListener("push", (event) => {
  let message = { title: "Dispatch", body: "", url: "/" };
  try {
    message = { ...message, ...event.data.json() };
  } catch (error) {
    if (event.data) message.body = event.data.text();
  }
  event.waitUntil(self.registration.showNotification(message.title, {
    body: message.body,
    tag: message.approval ? `approval-${message.approval.id}` : `event-${message.event_id}`,
    requireInteraction: message.event === "approval.requested",
    data: { url: message.url },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const target = new URL((event.notification.data && event.notification.data.url) || "/", self.location.origin);
  // Only our own pages: a payload cannot send the phone elsewhere.
  const url = target.origin === self.location.origin ? target.href : self.location.origin + "/";
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of windows) {
      if (client.url === url && "focus" in client) return client.focus();
    }
    return self.clients.openWindow(url);
  })());
});
